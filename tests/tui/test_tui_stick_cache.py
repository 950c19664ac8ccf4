"""Issue 13: a poll over an unchanged stick parses no manifest and runs no policy check.

The TUI's media polls (``tui.model.MediaScanner``) keep the scan cache and the core's
claimed-status cache (``appliance.evaluation.ClaimedStatusCache``) across polls, in a
child process. Work is counted by calls (``mediascan._read_entry`` parses one manifest,
``evaluation.evaluate_bundle`` runs the policy checks of one), never timed.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from datetime import timedelta
from pathlib import Path

import pytest
from tui_world import World

import tui.model
from appliance import evaluation, mediascan
from bundles.reader import MANIFEST_FILE
from tui.model import MediaPoll, MediaScanner

_real_poll_media = tui.model.poll_media


def counting(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    calls = {"parse": 0, "evaluate": 0}
    real_read, real_evaluate = mediascan._read_entry, evaluation.evaluate_bundle

    def read(path: str, fmt: str) -> mediascan.BundleEntry:
        calls["parse"] += 1
        return real_read(path, fmt)

    def evaluate(*args: object, **kwargs: object) -> object:
        calls["evaluate"] += 1
        return real_evaluate(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(mediascan, "_read_entry", read)
    monkeypatch.setattr(evaluation, "evaluate_bundle", evaluate)
    return calls


def bundles(poll: MediaPoll) -> list[mediascan.BundleEntry]:
    return [b for m in poll.media for b in m.bundles]


def test_second_poll_over_an_unchanged_stick_parses_and_evaluates_nothing(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = counting(monkeypatch)
    scanner = MediaScanner(world.home, [world.media], False, in_process=True)
    first = scanner.poll()
    n = len(bundles(first))
    assert n >= 4 and len(first.statuses) == n  # every bundle's manifest is readable
    assert calls == {"parse": n, "evaluate": n}
    assert (first.parsed, first.evaluated) == (n, n)

    second = scanner.poll()
    assert calls == {"parse": n, "evaluate": n}  # nothing parsed, nothing evaluated again
    assert (second.parsed, second.evaluated) == (0, 0)
    assert second.statuses == first.statuses
    assert all(b.claimed is None for b in bundles(second))  # the manifests stay in the scanner

    # A changed manifest (its identity: another mtime) is parsed and evaluated again, alone.
    changed = Path(bundles(first)[0].path) / MANIFEST_FILE
    st = changed.stat()
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    third = scanner.poll()
    assert calls == {"parse": n + 1, "evaluate": n + 1}
    assert (third.parsed, third.evaluated) == (1, 1)
    assert third.statuses == first.statuses


def test_a_changed_home_or_expiry_side_re_evaluates_every_claimed_status(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = counting(monkeypatch)
    scanner = MediaScanner(world.home, [world.media], False, in_process=True)
    first = scanner.poll()
    n = len(first.statuses)
    good = str(world.bundles["good"])
    assert first.statuses[good] == "new"

    world.import_(world.bundles["good"])  # the home's database changed: every status again
    before = dict(calls)  # (the import ran its own policy checks)
    after = scanner.poll()
    assert calls == {"parse": n, "evaluate": before["evaluate"] + n}
    assert after.statuses[good] == "imported"  # the core's word for it now
    assert scanner.poll().evaluated == 0

    # The clock past every manifest's expiry: each is judged again, and expired.
    latest = max(b.expires for b in bundles(first) if b.expires is not None)
    late = scanner.poll(clock=latest + timedelta(days=1))
    assert late.evaluated == n and calls["evaluate"] == before["evaluate"] + 2 * n
    was_new = [p for p, s in after.statuses.items() if s == "new"]
    assert was_new and all(late.statuses[p] == "expired" for p in was_new)
    assert calls["parse"] == n


def test_the_tui_process_parses_no_manifest(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real scanner: parsing and policy checks run in its child process, whose counts
    the poll reports; this process counts none of them."""
    scanner = MediaScanner(world.home, [world.media], False)
    calls = counting(monkeypatch)
    scanner.start()
    try:
        first = scanner.poll()
        n = len(bundles(first))
        assert (first.parsed, first.evaluated) == (n, n) and n >= 4
        second = scanner.poll()
        assert (second.parsed, second.evaluated) == (0, 0)
        assert second.statuses == first.statuses
        scanner.forget()  # the bench's --cold: every manifest as if changed
        assert scanner.poll().parsed == n
    finally:
        scanner.close()
    assert calls == {"parse": 0, "evaluate": 0}


def test_polls_asked_for_during_a_poll_run_after_it_in_its_thread(world: World) -> None:
    """Polls faster than a scan never stack threads: the running one polls once more."""
    scanner = MediaScanner(world.home, [world.media], False, in_process=True)
    assert scanner.claim()  # this thread polls
    assert not scanner.claim() and not scanner.claim()  # two more asked: one more poll
    assert scanner.more()
    assert not scanner.more()  # done: the next request polls again
    assert scanner.claim()
    assert not scanner.more()


def _scanner_dies(*_job: object) -> MediaPoll:
    os._exit(1)  # the scanner child is killed mid-poll (out of memory, an operator's kill)


def _children() -> list[int]:
    return sorted(p.pid for p in multiprocessing.active_children() if p.pid is not None)


def test_a_killed_scanner_is_restarted_with_empty_caches(world: World) -> None:
    """The child killed between polls: the next poll forks a new one, which starts cold
    (it parses every manifest again) and gives the same statuses; no error is shown."""
    scanner = MediaScanner(world.home, [world.media], False)
    scanner.start()
    try:
        first = scanner.poll()
        n = len(bundles(first))
        assert first.problem is None and n >= 4
        (child,) = _children()
        os.kill(child, signal.SIGKILL)
        again = scanner.poll()
        assert again.problem is None
        assert again.parsed == n and again.statuses == first.statuses
        assert _children() != [child]
    finally:
        scanner.close()


def test_a_scanner_that_dies_on_every_poll_gives_one_io_error_and_no_exception(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two forks in a row die: the poll reports ``io_error`` (the home screen shows it)
    instead of raising into the UI or retrying forever; a later poll tries again."""
    monkeypatch.setattr(tui.model, "poll_media", _scanner_dies)
    scanner = MediaScanner(world.home, [world.media], False)
    scanner.start()
    try:
        poll = scanner.poll()
        assert poll.media == [] and poll.statuses == {}
        assert poll.problem is not None and poll.problem.code == "io_error"
        assert poll.problem.message == "the media scanner stopped (BrokenProcessPool)"
        monkeypatch.setattr(tui.model, "poll_media", _real_poll_media)
        recovered = scanner.poll()  # the scanner forks afresh, with the real poll
        assert recovered.problem is None and len(bundles(recovered)) >= 4
    finally:
        scanner.close()


def test_a_closed_scanner_polls_nothing(world: World) -> None:
    scanner = MediaScanner(world.home, [world.media], False)
    scanner.start()
    scanner.close()
    poll = scanner.poll()
    assert poll.problem is not None and poll.problem.code == "io_error"
    assert poll.problem.message == "the media scanner is closed"
