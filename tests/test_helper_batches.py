"""``bundles.helper_batches``: work shared with one forked helper, whose reports are
checked and whose failures are redone here (real forks, real pipes)."""

from __future__ import annotations

import os
import threading
import time

import pytest

import bundles.helper_batches as hb
from bundles.helper_batches import NOT_USABLE, HelperBatches

pytestmark = [
    pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="no helper on one core"),
    pytest.mark.usefixtures("helper_counters"),  # every test: counted from zero, may fork
]
N = 1000


def _cancelled() -> BaseException:
    return RuntimeError("cancelled")


def _run(work, decode=lambda e, i: e, n: int = N, stop: threading.Event | None = None):  # type: ignore[no-untyped-def]
    seen: list[int] = []
    with HelperBatches(
        list(range(n)),
        work,
        lambda r: r,
        decode,
        stop or threading.Event(),
        _cancelled,
        seen.append,
    ) as shared:
        return shared.run(), seen, shared


def _double(i: int, here: bool) -> int:
    if here:
        time.sleep(0.0002)  # the helper surely takes batches
    return 2 * i


def test_every_item_once_and_the_helper_did_part(helper_counters: dict[str, int]) -> None:
    out, seen, shared = _run(_double)
    assert out == [2 * i for i in range(N)]
    assert helper_counters["helpers"] == 1 and 0 < helper_counters["by_helper"] == len(seen) < N
    assert shared.helper is None  # reaped


def test_an_item_the_helper_failed_on_is_done_here(helper_counters: dict[str, int]) -> None:
    def work(i: int, here: bool) -> int:
        if not here:
            raise ValueError("helper side")
        return i

    out, seen, _ = _run(work)
    assert out == list(range(N)) and seen == [] and helper_counters["by_helper"] == 0


def test_reports_it_cannot_use_are_done_here(helper_counters: dict[str, int]) -> None:
    out, seen, _ = _run(_double, decode=lambda e, i: NOT_USABLE)
    assert out == [2 * i for i in range(N)] and seen == []


def test_a_helper_that_dies_leaves_its_work_here(helper_counters: dict[str, int]) -> None:
    def work(i: int, here: bool) -> int:
        if not here:
            os._exit(3)
        return i

    out, _, shared = _run(work)
    assert out == list(range(N)) and helper_counters["by_helper"] == 0 and shared.helper is None


def test_a_failure_here_stops_and_kills_the_helper(helper_counters: dict[str, int]) -> None:
    def work(i: int, here: bool) -> int:
        if here and i >= 0:
            raise OSError(5, "disk gone")
        return i

    stop = threading.Event()
    out, _, shared = _run(work, stop=stop)
    errors = [x for x in out if isinstance(x, BaseException)]
    assert len(errors) == 1 and isinstance(errors[0], OSError) and stop.is_set()
    assert shared.helper is None  # killed and reaped


def test_stopped_before_it_ran_is_cancelled(helper_counters: dict[str, int]) -> None:
    """No helper is forked for work already stopped (one would take the first batch
    and leave it unreported: whichever process read the queue first decided)."""
    stop = threading.Event()
    stop.set()
    for _ in range(20):
        out, _, shared = _run(_double, stop=stop)
        assert isinstance(out[0], RuntimeError) and str(out[0]) == "cancelled"
        assert shared.helper is None
    assert helper_counters["helpers"] == 0


def test_no_helper_below_the_minimum_or_beside_a_thread(
    helper_counters: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    out, _, _ = _run(_double, n=hb.HELPER_MIN - 1)
    assert out == [2 * i for i in range(hb.HELPER_MIN - 1)] and helper_counters["helpers"] == 0
    monkeypatch.setattr(hb, "fork_is_safe", lambda: False)
    out, _, _ = _run(_double)
    assert out == [2 * i for i in range(N)] and helper_counters["helpers"] == 0


def test_malformed_frames_are_ignored() -> None:
    shared = HelperBatches(
        [1, 2], _double, lambda r: r, lambda e, i: e, threading.Event(), _cancelled
    )
    try:
        for frame in (b"not json", b"[99, [1, 2]]", b'["0", [1, 2]]', b"[0, [1]]", b"[0, 5]"):
            shared._frame(frame)
        assert shared.done == [False, False]
        shared._frame(b"[0, [7, 0]]")  # 0: the helper did not do it
        assert shared.done == [True, False] and shared.outcome[0] == 7
    finally:
        shared.close()
