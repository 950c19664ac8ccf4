"""The appliance home: where state, objects and staging live, and the import lock."""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import sqlite_utils

from appliance.db import connect
from appliance.errors import IOFailedError, LockHeldError, NotInitializedError

DB_FILE = "appliance.db"


def default_home() -> Path:
    """``$APPLIANCE_HOME``, else ``/var/lib/appliance`` for root, else a per-user folder."""
    env = os.environ.get("APPLIANCE_HOME")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/appliance")
    return Path.home() / ".local" / "share" / "appliance"


@dataclass(frozen=True)
class Home:
    root: Path

    @property
    def db_path(self) -> Path:
        return self.root / DB_FILE

    @property
    def objects(self) -> Path:
        return self.root / "objects"

    @property
    def staging(self) -> Path:
        return self.root / "staging"

    @property
    def lock_path(self) -> Path:
        return self.root / "lock"

    def exists(self) -> bool:
        return self.db_path.exists()

    def require(self) -> None:
        if not self.exists():
            raise NotInitializedError(
                f"{self.root} is not an initialised appliance home (run appliance init)"
            )

    def db(self) -> sqlite_utils.Database:
        self.require()
        return connect(self.db_path)

    def clean_staging(self) -> int:
        """Remove leftovers of an interrupted import; call only while holding the lock."""
        removed = 0
        if self.staging.is_dir():
            for entry in os.scandir(self.staging):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
                removed += 1
        return removed


class HomeLock:
    """One writer at a time: an exclusive ``flock`` on ``HOME/lock``.

    The kernel drops the lock when its holder dies, so a lock left by a dead
    process never blocks. ``wait`` polls up to ``timeout`` seconds.
    """

    def __init__(self, home: Home, *, wait: bool = False, timeout: float = 3600.0) -> None:
        self.home = home
        self.wait = wait
        self.timeout = timeout
        self.fd = -1

    def __enter__(self) -> HomeLock:
        try:
            self.fd = os.open(self.home.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise IOFailedError(f"cannot open lock {self.home.lock_path}: {e.strerror}") from e
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError as e:
                if not self.wait or time.monotonic() > deadline:
                    os.close(self.fd)
                    raise LockHeldError(
                        "another import or change is running on this home (use --wait)"
                    ) from e
                time.sleep(0.05)
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
