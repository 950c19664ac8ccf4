"""The TUI's media polls, one at a time, in one child process that it keeps.

Parsing a stick's manifests (up to ``mediascan.SCAN_BUDGET`` per poll) and running the
policy checks of every claimed artifact is seconds of Python on a hostile stick; in the
TUI's own process it would hold the GIL and starve the UI thread. The child keeps the
scan cache and the claimed-status cache between polls, and sends back only what the home
screen shows.

How the child is started matters. A process forked while another of its threads holds a
lock (SQLite's own mutex, say, in a worker reading the home) gets that lock held by
nobody, and its first use of it waits forever: forking beside a thread that queries
SQLite hung a third of such children here. So the child is forked only when this process
runs no other Python thread (the app's constructor, before the UI starts: no second
start-up of the interpreter); otherwise it is spawned, a fresh interpreter (the frozen
binary's entry calls ``multiprocessing.freeze_support`` for this). And no poll waits
forever: a child that has not answered within ``answer_within`` seconds is killed and the
poll reports ``io_error``; the next poll starts a new child.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from multiprocessing import get_context
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from appliance.home import Home
from bundles.forks import fork_is_safe
from bundles.timeutil import utcnow
from tui.model import MediaPoll, Problem, poll_media

__all__ = ["ANSWER_WITHIN", "MediaScanner", "start_method"]

#: Seconds a poll waits for the child's answer (a budgeted scan of a hostile stick takes
#: seconds; a child that takes this long is stuck, not slow).
ANSWER_WITHIN = 120.0

PollJob = Callable[..., MediaPoll]


def start_method() -> str:
    """``fork`` when this process runs no other Python thread, else ``spawn``
    (``bundles.forks``)."""
    return "fork" if fork_is_safe() else "spawn"


def _serve(conn: Connection, job: PollJob) -> None:
    """The child: run each job it is sent and send back what it gave, until the parent
    closes its end."""
    while True:
        try:
            args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            answer: tuple[bool, Any] = (True, job(*args))
        except Exception as e:  # noqa: BLE001 - a bug in a poll: re-raised by the parent
            answer = (False, e)
        conn.send(answer)


@dataclass
class _Child:
    process: BaseProcess
    conn: Connection

    def stop(self, grace: float = 0.0) -> int | None:
        """Close the pipe, give the child ``grace`` seconds to exit by itself (one that
        closed its end is exiting: its own exit code is wanted), then kill it; its exit
        code."""
        self.conn.close()
        if grace:
            self.process.join(grace)
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        return self.process.exitcode


class MediaScanner:
    """One child process that polls the media (see the module's docstring).

    ``in_process``: run the poll here instead (tests). ``job``: what the child runs for
    a poll (``poll_media``; tests give another). ``method``: ``fork`` or ``spawn`` for
    every child (default: ``start_method()`` at each start)."""

    def __init__(
        self,
        home: Home,
        dirs: Sequence[Path],
        auto: bool,
        *,
        in_process: bool = False,
        job: PollJob = poll_media,
        method: str | None = None,
        answer_within: float = ANSWER_WITHIN,
    ) -> None:
        if method not in (None, "fork", "spawn"):
            raise ValueError(f"start method {method!r}: fork or spawn")
        self.home = home
        self.dirs = tuple(str(d) for d in dirs)
        self.auto = auto
        self.in_process = in_process
        self.job = job
        self.method = method
        self.answer_within = answer_within
        self.started: list[str] = []  # the start method of each child, in order
        self._lock = threading.Lock()
        self._child: _Child | None = None
        self._forget = False
        self._closed = False
        self._turn = threading.Lock()
        self._polling = False
        self._again = False

    def claim(self) -> bool:
        """Ask for a poll. True: the caller runs it (then ``more`` until False); False: a
        poll is running and its thread polls once more for this request. So polls that
        come faster than a scan never stack threads: one polls, the others return."""
        with self._turn:
            if self._polling:
                self._again = True
                return False
            self._polling = True
            return True

    def more(self) -> bool:
        """After a claimed poll: True when another was asked for meanwhile (poll again)."""
        with self._turn:
            if self._again:
                self._again = False
                return True
            self._polling = False
            return False

    def forget(self) -> None:
        """The next poll starts with empty caches (as if every manifest changed)."""
        self._forget = True

    def start(self) -> None:
        """Start the child now, from the thread that calls this (the app's constructor:
        before the UI's threads run, so it is forked)."""
        with self._lock:
            self._start()

    def _start(self) -> _Child:
        if self._child is None:
            method = self.method or start_method()
            ctx = get_context("fork") if method == "fork" else get_context("spawn")
            ours, theirs = ctx.Pipe()
            process = ctx.Process(target=_serve, args=(theirs, self.job), daemon=True)
            try:
                process.start()
            finally:
                theirs.close()
            self._child = _Child(process, ours)
            self.started.append(method)
        return self._child

    def _drop(self, grace: float = 0.0) -> int | None:
        """Stop the child (``_Child.stop``) and forget it; its exit code, if there was one."""
        child, self._child = self._child, None
        return None if child is None else child.stop(grace)

    def poll(self, clock: datetime | None = None) -> MediaPoll:
        """One poll (blocks its caller: call from a worker thread); returns a problem
        instead of raising for a child that died or hangs.
        ``clock``: the time to judge expiry by (default: this process's clock, now)."""
        clock = utcnow() if clock is None else clock
        with self._lock:
            forget, self._forget = self._forget, False
            job = (str(self.home.root), self.dirs, self.auto, clock, forget)
            if self.in_process:
                return self.job(*job)
            failure = "the media scanner is closed"
            for _attempt in range(2):  # a scanner that died (killed, out of memory): once more
                if self._closed:
                    break
                try:
                    child = self._start()
                    child.conn.send(job)
                    if not child.conn.poll(self.answer_within):
                        self._drop()
                        failure = f"the media scanner did not answer in {self.answer_within:g} s"
                        break  # stuck, not dead: the next poll starts a new one
                    ok, answer = child.conn.recv()
                except (EOFError, OSError) as e:
                    code = self._drop(grace=1.0)
                    job = (*job[:4], True)  # a new child has empty caches
                    failure = f"the media scanner stopped ({_how(e, code)})"
                    continue
                if not ok:
                    raise answer
                return answer  # type: ignore[no-any-return]
            return MediaPoll([], {}, problem=Problem("io_error", failure))

    def close(self) -> None:
        """Stop the child. A poll waiting on it meanwhile sees it die and reports the
        scanner closed; that poll's thread releases the pipe (closing it under a thread
        that waits on it would not wake that thread)."""
        self._closed = True
        if self._lock.acquire(blocking=False):
            try:
                self._drop()
            finally:
                self._lock.release()
        elif (child := self._child) is not None:
            child.process.kill()


def _how(e: BaseException, exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        return f"signal {-exitcode}"
    if exitcode is not None:
        return f"exit code {exitcode}"
    return type(e).__name__
