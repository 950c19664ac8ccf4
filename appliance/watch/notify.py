"""Kernel file notifications (inotify, through ``inotify_simple``) for the store and witness.

Watches ``objects/``, each fan-out folder under it, and the witness's folder
(the witness is replaced by rename, so its folder is what can be watched).
``read`` returns the paths touched, whether a write or truncate was among the
events, and whether something happened that cannot be attributed to one path
(queue overflow, a watched folder removed or moved): then the caller re-checks
everything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from inotify_simple import INotify, flags

from appliance.errors import IOFailedError

OBJECT_MASK = (
    flags.MODIFY
    | flags.ATTRIB
    | flags.CLOSE_WRITE
    | flags.MOVED_FROM
    | flags.MOVED_TO
    | flags.CREATE
    | flags.DELETE
    | flags.DELETE_SELF
    | flags.MOVE_SELF
    | flags.DONT_FOLLOW
    | flags.ONLYDIR
)
WITNESS_MASK = (
    flags.CLOSE_WRITE
    | flags.MOVED_FROM
    | flags.MOVED_TO
    | flags.CREATE
    | flags.DELETE
    | flags.MODIFY
    | flags.ATTRIB
    | flags.DELETE_SELF
    | flags.MOVE_SELF
    | flags.ONLYDIR
)
HOME_MASK = (
    flags.CREATE | flags.MOVED_TO | flags.MOVED_FROM | flags.DELETE | flags.ONLYDIR | flags.MASK_ADD
)
_LOST = flags.Q_OVERFLOW | flags.DELETE_SELF | flags.MOVE_SELF | flags.IGNORED


@dataclass
class Batch:
    paths: dict[Path, bool] = field(default_factory=dict)  # path -> written or truncated
    witness: bool = False
    db_replaced: bool = False  # the database file itself was replaced, removed or renamed
    rescan: bool = False
    events: int = 0


class Notifier:
    def __init__(self, objects: Path, witness: Path | None, db_file: Path | None = None) -> None:
        self.objects = objects
        self.witness = witness
        self.db_file = db_file
        self.ino = INotify()
        self.dirs: dict[int, Path] = {}
        self.witness_wd: int | None = None
        self.home_wd: int | None = None
        self.rewatch()

    def close(self) -> None:
        self.ino.close()

    def _add(self, path: Path, mask: int) -> int | None:
        try:
            wd = int(self.ino.add_watch(path, mask))
        except FileNotFoundError:
            return None
        except OSError as e:
            raise IOFailedError(
                f"cannot watch {path}: {e.strerror} (raise fs.inotify.max_user_watches?)"
            ) from e
        return wd

    def rewatch(self) -> None:
        """(Re)establish every watch: objects/, its fan-out folders, the witness folder."""
        wd = self._add(self.objects, OBJECT_MASK)
        if wd is not None:
            self.dirs[wd] = self.objects
            for entry in os.scandir(self.objects):
                if entry.is_dir(follow_symlinks=False):
                    sub = self._add(Path(entry.path), OBJECT_MASK)
                    if sub is not None:
                        self.dirs[sub] = Path(entry.path)
        if self.witness is not None:
            self.witness_wd = self._add(self.witness.parent, WITNESS_MASK | flags.MASK_ADD)
        if self.db_file is not None:
            self.home_wd = self._add(self.db_file.parent, HOME_MASK)

    def read(self, timeout_ms: int) -> Batch:
        batch = Batch()
        for ev in self.ino.read(timeout=timeout_ms, read_delay=20):
            batch.events += 1
            if ev.mask & _LOST:
                batch.rescan = True
                if ev.wd == self.witness_wd or ev.wd < 0:
                    batch.witness = True
                continue
            if ev.wd == self.home_wd:
                if self.db_file is not None and ev.name == self.db_file.name:
                    batch.db_replaced = True
                if ev.wd != self.witness_wd:
                    continue
            if ev.wd == self.witness_wd:
                if self.witness is not None and ev.name == self.witness.name:
                    batch.witness = True
                continue
            parent = self.dirs.get(ev.wd)
            if parent is None:
                batch.rescan = True
                continue
            path = parent / ev.name
            if (
                ev.mask & flags.ISDIR
                and parent == self.objects
                and ev.mask & (flags.CREATE | flags.MOVED_TO)
            ):
                sub = self._add(path, OBJECT_MASK)  # a new fan-out folder: watch it too
                if sub is not None:
                    self.dirs[sub] = path
                    for entry in os.scandir(path):  # files placed before the watch existed
                        batch.paths.setdefault(Path(entry.path), False)
            written = bool(ev.mask & flags.MODIFY)
            batch.paths[path] = batch.paths.get(path, False) or written
        return batch
