"""Background scrub: re-hash every object at a bounded rate, oldest-verified first.

"Last verified" comes from the audit log's evidence: verified ``load`` events
(their ``digest``) and ``scrub`` events (the digests they list). Objects no one
ever verified come first (by import time), then the longest unverified. Each
object is hashed by reading it in chunks, sleeping so that the read rate stays
at ``rate`` bytes per second. Verified objects are recorded in ``scrub``
events, in batches (every ``BATCH`` objects or ``BATCH_SECONDS``); a mismatch
is an ``object_modified`` alarm.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import blake3

from appliance import audit
from appliance.db import Database, transaction
from appliance.home import Home
from appliance.store import object_path
from appliance.watch.alarms import Alarm
from appliance.watch.objects import relpath
from bundles.errors import ApplianceError, UsageError

CHUNK = 1 << 20
BATCH = 256
BATCH_SECONDS = 60.0
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_rate(text: str) -> int:
    """``200M`` -> bytes per second (K, M, G, T are powers of 1024); ``0`` is off."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?(?:/s)?\s*", text, re.IGNORECASE)
    if m is None:
        raise UsageError(f"--scrub: {text!r} is not a rate such as 200M or 0")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def last_verified(db: Database) -> dict[str, tuple[int, str]]:
    """digest -> (audit seq, time) of the newest load or scrub event that verified it."""
    out: dict[str, tuple[int, str]] = {}
    for seq, type_, ts, detail in db.execute(
        "SELECT seq, type, ts, detail FROM audit WHERE (type = 'load' AND outcome = 'verified')"
        " OR (type = 'scrub' AND outcome = 'verified') ORDER BY seq"
    ):
        d = audit.detail_dict(detail)
        digests = d.get("verified", []) if type_ == "scrub" else [d.get("digest")]
        for dg in digests:
            if isinstance(dg, str):
                out[dg] = (int(seq), str(ts))
    return out


def scrub_order(db: Database) -> list[tuple[str, int]]:
    """(digest, size) of every referenced object, oldest-verified first."""
    seen = last_verified(db)
    objs: dict[str, tuple[int, str]] = {}
    for digest, size, imported in db.execute(
        "SELECT digest, size, min(imported_at) FROM artifacts GROUP BY digest"
    ):
        objs[str(digest)] = (int(size), str(imported))
    # Never verified (seq 0) first, by import time; then by the last verification.
    return [
        (d, s)
        for d, (s, imp) in sorted(
            objs.items(), key=lambda kv: (seen.get(kv[0], (0, ""))[0], kv[1][1])
        )
    ]


@dataclass
class ScrubProgress:
    """The current pass, for ``watch --json`` and the TUI."""

    rate: int
    passes: int = 0
    objects_done: int = 0
    objects_total: int = 0
    bytes_done: int = 0
    bytes_total: int = 0
    current: str | None = None
    mismatches: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Scrubber:
    """Runs passes until ``stop`` is set; ``report`` gets each mismatch alarm."""

    def __init__(
        self,
        home: Home,
        rate: int,
        report: Callable[[Alarm], None],
        *,
        pause_between_passes: float = 5.0,
    ) -> None:
        self.home = home
        self.rate = rate
        self.report = report
        self.pause = pause_between_passes
        self.progress = ScrubProgress(rate)
        self._lock = threading.Lock()
        self._pending: list[str] = []
        self._batch_started = time.monotonic()

    def snapshot(self) -> ScrubProgress:
        with self._lock:
            return ScrubProgress(**asdict(self.progress))

    def run(self, stop: threading.Event) -> None:
        db = self.home.db()
        try:
            while not stop.is_set():
                self.one_pass(db, stop)
                stop.wait(self.pause)
        finally:
            db.conn.close()

    def one_pass(self, db: Database, stop: threading.Event) -> None:
        order = scrub_order(db)
        with self._lock:
            self.progress.objects_done = self.progress.bytes_done = 0
            self.progress.objects_total = len(order)
            self.progress.bytes_total = sum(s for _, s in order)
        for digest, size in order:
            if stop.is_set():
                break
            with self._lock:
                self.progress.current = digest
            ok, message = self._hash(digest, size, stop)
            if stop.is_set() and ok is None:
                break
            with self._lock:
                self.progress.objects_done += 1
                self.progress.bytes_done += size
            if ok:
                self._pending.append(digest)
            elif ok is False:
                with self._lock:
                    self.progress.mismatches += 1
                self.report(
                    Alarm(
                        "object_modified",
                        relpath(self.home, object_path(self.home, digest)),
                        f"scrub: {message}",
                        detail={"found_by": "scrub"},
                    )
                )
            self._flush(db, force=False)
        self._flush(db, force=True)
        with self._lock:
            self.progress.current = None
            self.progress.passes += 1

    def _hash(self, digest: str, size: int, stop: threading.Event) -> tuple[bool | None, str]:
        """True: verifies; False: it does not (message says how); None: stopped or vanished."""
        path = object_path(self.home, digest)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None, "object is missing"  # the watcher reports removals itself
        except OSError as e:
            return False, f"object cannot be opened ({e.strerror})"
        hasher = blake3.blake3()
        n = 0
        started = time.monotonic()
        try:
            while True:
                if stop.is_set():
                    return None, "stopped"
                chunk = os.pread(fd, CHUNK, n)
                if not chunk:
                    break
                hasher.update(chunk)
                n += len(chunk)
                with self._lock:
                    self.progress.bytes_done += len(chunk)
                if self.rate > 0:
                    ahead = n / self.rate - (time.monotonic() - started)
                    if ahead > 0:
                        stop.wait(ahead)
        except OSError as e:
            return False, f"read error ({e.strerror})"
        finally:
            os.close(fd)
            with self._lock:
                self.progress.bytes_done -= n  # counted again as a whole object by the caller
        if n != size or hasher.hexdigest() != digest:
            return False, f"stored bytes no longer match (BLAKE3 {hasher.hexdigest()[:16]}...)"
        return True, ""

    def _flush(self, db: Database, *, force: bool) -> None:
        due = time.monotonic() - self._batch_started >= BATCH_SECONDS
        if not self._pending or not (force or due or len(self._pending) >= BATCH):
            return
        digests, self._pending = self._pending, []
        self._batch_started = time.monotonic()
        try:
            with transaction(db):
                audit.append(
                    db,
                    "scrub",
                    outcome="verified",
                    detail={"verified": digests, "rate": self.rate},
                )
        except ApplianceError:
            self._pending = digests + self._pending  # the database is busy: next time
