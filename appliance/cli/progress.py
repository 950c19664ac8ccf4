"""A progress bar on stderr when it is a terminal (plain text; never imports textual)."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


class ProgressBar:
    """Thread-safe byte progress over several artifacts; silent when not a TTY."""

    def __init__(self, stream: TextIO | None = None, *, enabled: bool = True) -> None:
        self.stream = stream or sys.stderr
        # (no stream: the process was started with stderr closed)
        self.enabled = enabled and self.stream is not None and self.stream.isatty()
        self.width = 30
        self.done: dict[str, int] = {}
        self.sizes: dict[str, int] = {}
        self.lock = threading.Lock()
        self.start = time.monotonic()
        self.last = 0.0

    def __call__(self, name: str, done: int, size: int) -> None:
        if not self.enabled:
            return
        with self.lock:
            self.done[name] = done
            self.sizes[name] = size
            total = max(sum(self.sizes.values()), 1)
            now = time.monotonic()
            if now - self.last < 0.1 and sum(self.done.values()) < total:
                return
            self.last = now
            got = sum(self.done.values())
            frac = min(got / total, 1.0)
            rate = got / max(now - self.start, 1e-6)
            bar = "#" * int(frac * self.width)
            self.stream.write(
                f"\r[{bar:<{self.width}}] {frac:6.1%} {rate / 1e6:8.1f} MB/s {name[:24]:<24}"
            )
            self.stream.flush()

    def finish(self) -> None:
        if self.enabled and self.done:
            self.stream.write("\n")
            self.stream.flush()
