"""Issue 13: a poll over an unchanged stick parses no manifest and runs no policy check.

The TUI's media polls (``tui.scanner.MediaScanner``) keep the scan cache and the core's
claimed-status cache (``appliance.evaluation.ClaimedStatusCache``) across polls, in a
child process. Work is counted by calls (``mediascan._read_entry`` parses one manifest,
``evaluation.evaluate_bundle`` runs the policy checks of one), never timed.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from tui_world import World

import tui.model
from appliance import evaluation, mediascan
from bundles.reader import MANIFEST_FILE
from tui.model import MediaPoll
from tui.scanner import MediaScanner, start_method


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


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_the_tui_process_parses_no_manifest(
    world: World, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    """The real scanner, forked or spawned: parsing and policy checks run in its child
    process, whose counts the poll reports; this process counts none of them."""
    scanner = MediaScanner(world.home, [world.media], False, method=method)
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
    assert scanner.started == [method]


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
    world: World,
) -> None:
    """Two forks in a row die: the poll reports ``io_error`` (the home screen shows it)
    instead of raising into the UI or retrying forever; a later poll tries again."""
    scanner = MediaScanner(world.home, [world.media], False, job=_scanner_dies, method="fork")
    scanner.start()
    try:
        poll = scanner.poll()
        assert poll.media == [] and poll.statuses == {}
        assert poll.problem is not None and poll.problem.code == "io_error"
        assert poll.problem.message == "the media scanner stopped (exit code 1)"
        assert len(scanner.started) == 2  # tried once more, then gave up
        scanner.job = tui.model.poll_media
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


def _stuck(*_job: object) -> MediaPoll:
    threading.Event().wait()  # a child that never answers (a deadlock, a stuck read)
    raise AssertionError("unreachable")


def test_a_scanner_that_never_answers_is_killed_and_reported(world: World) -> None:
    """A poll never waits forever: a child silent for ``answer_within`` seconds is killed,
    the poll reports ``io_error``, and the next poll starts a new child."""
    scanner = MediaScanner(
        world.home, [world.media], False, job=_stuck, method="fork", answer_within=0.5
    )
    scanner.start()
    try:
        (child,) = _children()
        poll = scanner.poll()
        assert poll.media == [] and poll.problem is not None
        assert (poll.problem.code, poll.problem.message) == (
            "io_error",
            "the media scanner did not answer in 0.5 s",
        )
        assert child not in _children()  # killed, and reaped
        scanner.job = tui.model.poll_media
        assert scanner.poll().problem is None and len(scanner.started) == 2
    finally:
        scanner.close()
    assert _children() == []


def test_the_child_is_forked_only_when_this_process_has_no_other_thread() -> None:
    code = (
        "import threading\n"
        "from tui.scanner import start_method\n"
        "alone = start_method()\n"
        "threading.Thread(target=threading.Event().wait, daemon=True).start()\n"
        "print(alone, start_method())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split() == ["fork", "spawn"]


def test_a_scanner_started_beside_a_thread_using_sqlite_answers(world: World) -> None:
    """A thread of the TUI reads the home's database while the scanner starts (a
    re-start after the child died, or an app built beside another's workers). A fork
    then could copy SQLite's mutex held, and the child would hang in its first query
    (one child in three did, in a loop like this one): it is spawned instead, and every
    poll answers."""
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            conn = sqlite3.connect(world.home.root / "appliance.db")
            conn.execute("SELECT count(*) FROM audit").fetchall()
            conn.close()

    busy = threading.Thread(target=reader, daemon=True)
    busy.start()
    answers: list[MediaPoll] = []
    try:
        for _ in range(8):
            assert start_method() == "spawn"
            scanner = MediaScanner(world.home, [world.media], False, answer_within=60)
            scanner.start()
            asked = threading.Thread(target=lambda s=scanner: answers.append(s.poll()), daemon=True)
            asked.start()
            asked.join(90)
            scanner.close()
            assert not asked.is_alive(), "a poll hung"
            assert scanner.started == ["spawn"]
    finally:
        stop.set()
        busy.join(10)
    assert [a.problem for a in answers] == [None] * 8
    assert all(len(bundles(a)) >= 4 for a in answers)
