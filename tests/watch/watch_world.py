"""Helpers for the watch tests: a real Watcher in a thread, collecting its alarms.

``watched`` starts ``appliance.watch.Watcher`` in a thread on a fresh site (with
a witness) and collects every alarm it raises; ``Watched.wait`` returns the
alarm of a code and how long after the change it came.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from conftest_load import Site

from appliance.store import object_path
from appliance.watch import Alarm, Watcher

DEADLINE = 2.0  # the contract
MARGIN = 0.5  # measured figures must beat the contract by this much


@dataclass
class Watched:
    site: Site
    watcher: Watcher
    stop: threading.Event
    thread: threading.Thread
    alarms: list[tuple[float, Alarm]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def sink(self, alarm: Alarm) -> None:
        with self.lock:
            self.alarms.append((time.monotonic(), alarm))

    def codes(self) -> set[str]:
        with self.lock:
            return {a.code for _, a in self.alarms}

    def wait(self, code: str, since: float, timeout: float = DEADLINE + 3) -> tuple[Alarm, float]:
        deadline = since + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for t, a in self.alarms:
                    if a.code == code:
                        print(f"watch latency: {code} {1000 * (t - since):.0f} ms")  # -s shows it
                        return a, t - since
            time.sleep(0.01)
        raise AssertionError(f"no {code} alarm within {timeout}s; got {self.codes()}")

    def quiet(self, seconds: float) -> None:
        """Nothing raised during the next ``seconds``."""
        time.sleep(seconds)
        assert self.alarms == [], [a for _, a in self.alarms]

    def digest(self, ref: str = "model@2.0") -> str:
        db = self.site.h.db()
        try:
            name, _, version = ref.partition("@")
            row = db.execute(
                "SELECT digest FROM artifacts WHERE name = ? AND version = ?", [name, version]
            ).fetchone()
            return str(row[0])
        finally:
            db.conn.close()

    def object(self, ref: str = "model@2.0") -> Path:
        return object_path(self.site.h, self.digest(ref))


def make_writable(path: Path) -> None:
    """What an attacker does first (the store keeps objects 0444, maybe immutable)."""
    clear_immutable(path)
    os.chmod(path, stat.S_IMODE(os.stat(path).st_mode) | stat.S_IWUSR)


def clear_immutable(path: Path) -> None:
    from appliance.store import clear_immutable as clear

    clear(path)


def start(site: Site, **kw: object) -> Watched:
    stop = threading.Event()
    w = Watched(site, None, stop, None)  # type: ignore[arg-type]
    watcher = Watcher(site.h, site.witness, sinks=(w.sink,), **kw)  # type: ignore[arg-type]
    thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
    w.watcher, w.thread = watcher, thread
    thread.start()
    assert watcher.ready.wait(20), "watcher did not start"
    return w
