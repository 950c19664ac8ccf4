"""Many small pieces of work shared by this process and one forked helper.

An import of many small files spends its time in Python per file (staging: open the
member, read, hash, create and write the staging file; promotion: reopen, check, rename,
flag), and so does ``bundle create`` (open, read, hash and write each source); threads
cannot share that: the Python part holds the GIL (two threads were slower than one). So
where the process may fork (``bundles.forks.fork_is_safe``: no other thread, more than
one core, enough items to pay for a fork), a helper process does part of the work beside
it:

* The items are cut into batches; a pipe holds every batch number (the whole queue fits
  the pipe's buffer) and each process takes the next one from it, so neither waits for
  the other and each batch is taken exactly once.
* The helper runs the same ``work`` function on its batches, with the same descriptors
  (inherited), and writes what each item gave to its own pipe, one JSON frame per batch
  (``encode``), or ``0`` where the item failed. It never reports an error of its own:
  this process does that item again and raises what it finds, so a refusal, its code
  and its audit event are this process's, as without a helper.
* What the helper reports is checked for shape (a batch number in range not done here,
  one entry per item, each accepted by ``decode``); anything else, a batch it never
  reported, a helper that died, is done here.
* A failure here stops both: this process stops taking batches and kills the helper.

``on_helper`` is called for each item the helper did, when its frame arrives (this
process looks after each of its own batches): progress, for instance. The helper reads
no database and writes nothing but what ``work`` writes and its pipe; it ends with
``os._exit``.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar, cast

from bundles.fdio import write_all
from bundles.forks import MAX_BATCHES, batch_queue, fork_is_safe, fork_with_pipe, take_batch

__all__ = ["NOT_USABLE", "HelperBatches", "counters"]

HELPER_MIN = 256  # fewer items than this: a fork costs more than it saves
_BATCH = 64  # items a batch (about 10 ms of work): small enough to share out evenly
_AGAIN = 0  # the helper's entry for an item it did not do: do it here
_FRAME_CAP = 1 << 24  # no honest frame comes near this
NOT_USABLE = object()  # what ``decode`` returns for an entry this process must redo

T = TypeVar("T")
Item = TypeVar("Item")
counters = {"helpers": 0, "by_helper": 0}  # pinned by tests (what helpers did)


class HelperBatches(Generic[Item, T]):
    """Run ``work(item, here)`` on every item (``here``: False in the helper), here and,
    where it pays, in one forked helper.

    ``encode`` turns a result into JSON for the helper's frame; ``decode(entry, index)``
    turns it back, or returns ``NOT_USABLE``. A failure here (an ``Exception`` from
    ``work``) sets ``stop``; once ``stop`` is set (here, or by another thread), what is
    left is ``cancelled()``. Construct it before starting any thread (it forks then),
    call ``run`` once, and ``close`` in every case (a context manager: it kills a
    helper still running)."""

    def __init__(
        self,
        items: Sequence[Item],
        work: Callable[[Item, bool], T],
        encode: Callable[[T], object],
        decode: Callable[[object, int], object],
        stop: threading.Event,
        cancelled: Callable[[], BaseException],
        on_helper: Callable[[Item], None] | None = None,
        *,
        helper_min: int = HELPER_MIN,
    ) -> None:
        self.items = items
        self.work = work
        self.encode = encode
        self.decode = decode
        self.stop = stop
        self.cancelled = cancelled
        self.on_helper = on_helper
        n = len(items)
        size = max(_BATCH, -(-n // MAX_BATCHES))
        self.batches = [range(k, min(k + size, n)) for k in range(0, n, size)]
        self.outcome: list[T | BaseException | None] = [None] * n
        self.done = [False] * n
        self.helper: tuple[int, int] | None = None
        self._frames = bytearray()
        self._queue: int | None = None
        if n == 0:
            return
        self._queue = batch_queue(len(self.batches))
        if n >= helper_min and (os.cpu_count() or 1) > 1 and not stop.is_set() and fork_is_safe():
            self.helper = self._start_helper()

    def __enter__(self) -> HelperBatches[Item, T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _take(self) -> int | None:
        assert self._queue is not None
        return take_batch(self._queue)

    # --- the helper ---------------------------------------------------------------

    def _start_helper(self) -> tuple[int, int] | None:
        started = fork_with_pipe(self._serve)  # the helper works and writes frames
        if started is not None:
            counters["helpers"] += 1
        return started

    def _serve(self, w: int) -> None:
        """In the helper: take batches until the queue is empty, one frame each."""
        while (b := self._take()) is not None:
            entries: list[object] = []
            failed = False
            for i in self.batches[b]:
                if failed:
                    entries.append(_AGAIN)
                    continue
                try:
                    entries.append(self.encode(self.work(self.items[i], False)))
                except BaseException:  # noqa: BLE001 - this item is done again there
                    failed = True
                    entries.append(_AGAIN)
            data = json.dumps([b, entries]).encode()
            write_all(w, len(data).to_bytes(4, "little") + data)
            if failed:
                return  # the other process will fail too: stop taking its work

    def _frame(self, data: bytes) -> None:
        """One frame from the helper, taken only if well formed."""
        try:
            b, entries = json.loads(data)
        except ValueError:
            return
        if type(b) is not int or not 0 <= b < len(self.batches) or not isinstance(entries, list):
            return
        batch = self.batches[b]
        if len(entries) != len(batch) or any(self.done[i] for i in batch):
            return
        for i, entry in zip(batch, entries, strict=True):
            got = NOT_USABLE if entry == _AGAIN else self.decode(entry, i)
            if got is NOT_USABLE:
                continue  # left for this process
            self.outcome[i] = cast(T, got)
            self.done[i] = True
            counters["by_helper"] += 1
            if self.on_helper is not None:
                self.on_helper(self.items[i])

    def _drain(self, block: bool) -> None:
        """Read what the helper has written (all of it, to its end, when ``block``)."""
        if self.helper is None:
            return
        _, r = self.helper
        os.set_blocking(r, block)
        eof = False
        while True:
            try:
                chunk = os.read(r, 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                eof = True
                break
            self._frames += chunk
        buf = self._frames
        while len(buf) >= 4:
            size = int.from_bytes(buf[:4], "little")
            if size > _FRAME_CAP:
                buf.clear()
                break
            if len(buf) < 4 + size:
                break
            self._frame(bytes(buf[4 : 4 + size]))
            del buf[: 4 + size]
        if eof:
            self._reap(kill=False)

    def _reap(self, *, kill: bool) -> None:
        if self.helper is None:
            return
        pid, r = self.helper
        self.helper = None
        os.close(r)
        if kill:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)

    # --- this process -------------------------------------------------------------

    def _one(self, i: int) -> bool:
        """Do item ``i`` here; False once the work has failed."""
        self.done[i] = True
        if self.stop.is_set():
            self.outcome[i] = self.cancelled()
            return False
        try:
            self.outcome[i] = self.work(self.items[i], True)
        except Exception as e:  # noqa: BLE001 - the caller ranks and raises it
            self.outcome[i] = e
            self.stop.set()
            return False
        return True

    def run(self) -> list[T | BaseException | None]:
        """Do every item; each one's outcome, in order (None: never reached, after a
        failure)."""
        if self._queue is None:
            return self.outcome
        ok = True
        while ok and (b := self._take()) is not None:
            for i in self.batches[b]:
                if not self._one(i):
                    ok = False
                    break
            self._drain(block=False)
        if not ok:
            self._reap(kill=True)  # its work is not wanted any more
            return self.outcome
        self._drain(block=True)
        for i in range(len(self.items)):  # what the helper did not report
            if not self.done[i] and not self._one(i):
                break
        return self.outcome

    def close(self) -> None:
        """Release the queue and kill a helper still running (idempotent)."""
        if self._queue is not None:
            os.close(self._queue)
            self._queue = None
        self._reap(kill=True)
