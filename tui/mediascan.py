"""Find removable media and the bundles on them (no textual here; read only).

Media are the mounted file systems the kernel calls removable (found by
``appliance.mediascan``, as ``appliance media`` does), plus folders given with
``--media``. A bundle is the media folder itself, any immediate subdirectory,
or any immediate ``.tar`` file holding ``manifest.dsse.json``. What is shown
of a bundle here comes from ``bundles.reader.peek``: UNVERIFIED, and labelled
so wherever it appears. Results are cached by (path, mtime, size) so a poll
every two seconds reads almost nothing.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from appliance import mediascan as appliance_mediascan
from bundles.errors import ApplianceError
from bundles.media import open_media
from bundles.reader import MANIFEST_FILE, peek

MAX_LISTED = 200  # entries looked at per media folder


@dataclass(frozen=True)
class BundleInfo:
    """One bundle found on media, as it claims to be (unverified)."""

    path: Path
    kind: str  # "dir" | "tar"
    stream: str | None = None
    sequence: int | None = None
    artifacts: int = 0
    total_size: int = 0
    expires: datetime | None = None
    error_code: str | None = None
    error_message: str | None = None

    @property
    def name(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class MediaInfo:
    path: Path
    removable: bool  # False: a folder given with --media
    bundles: tuple[BundleInfo, ...]
    documents: tuple[Path, ...]  # *.json files: candidate rollback authorizations


def removable_mounts() -> list[Path]:
    """Mount points of removable media: the same detection as ``appliance media``."""
    return [Path(m.mount_point) for m in appliance_mediascan.removable_mounts()]


class MediaScanner:
    """Scan media folders for bundles; remembers what it read until a folder changes."""

    def __init__(self, extra: Iterable[Path] = (), *, auto: bool = True) -> None:
        self.extra = [Path(p) for p in extra]
        self.auto = auto
        self._cache: dict[Path, tuple[tuple[int, int], BundleInfo | None]] = {}

    def scan(self) -> list[MediaInfo]:
        roots: list[tuple[Path, bool]] = [(p, False) for p in self.extra]
        if self.auto:
            given = {p.resolve() for p in self.extra}
            roots += [(p, True) for p in removable_mounts() if p.resolve() not in given]
        return [self._scan_media(path, removable) for path, removable in roots]

    def _scan_media(self, root: Path, removable: bool) -> MediaInfo:
        bundles: list[BundleInfo] = []
        documents: list[Path] = []
        top = self._bundle(root)
        if top is not None:
            return MediaInfo(root, removable, (top,), ())
        try:
            entries = sorted(os.scandir(root), key=lambda e: e.name)[:MAX_LISTED]
        except OSError:
            return MediaInfo(root, removable, (), ())
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            info = self._bundle(path)
            if info is not None:
                bundles.append(info)
            elif entry.name.endswith(".json") and entry.is_file(follow_symlinks=False):
                documents.append(path)
            elif entry.is_dir(follow_symlinks=False):
                documents.extend(_json_files(path))
        return MediaInfo(root, removable, tuple(bundles), tuple(documents))

    def _bundle(self, path: Path) -> BundleInfo | None:
        try:
            st = os.lstat(path)
        except OSError:
            return None
        if stat.S_ISDIR(st.st_mode):
            try:
                manifest = os.lstat(path / MANIFEST_FILE)
            except OSError:
                return None
            key = (manifest.st_mtime_ns, manifest.st_size)
            kind = "dir"
        elif stat.S_ISREG(st.st_mode) and path.suffix == ".tar":
            key = (st.st_mtime_ns, st.st_size)
            kind = "tar"
        else:
            return None
        cached = self._cache.get(path)
        if cached is not None and cached[0] == key:
            return cached[1]
        info = _peek(path, kind)
        self._cache[path] = (key, info)
        return info


def _json_files(folder: Path) -> list[Path]:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)[:MAX_LISTED]
    except OSError:
        return []
    return [
        Path(e.path)
        for e in entries
        if e.name.endswith(".json") and not e.name.startswith(".") and e.is_file()
    ]


def _peek(path: Path, kind: str) -> BundleInfo | None:
    """What the bundle claims; ``None`` for a tar that holds no manifest."""
    try:
        with open_media(path) as source:
            if MANIFEST_FILE not in source.files():
                return None
            _, manifest = peek(source)
    except ApplianceError as e:
        if kind == "tar" and e.code in ("archive_corrupt", "not_a_bundle"):
            return None
        return BundleInfo(path, kind, error_code=e.code, error_message=e.message)
    return BundleInfo(
        path,
        kind,
        stream=manifest.stream,
        sequence=manifest.sequence,
        artifacts=len(manifest.artifacts),
        total_size=sum(a.size for a in manifest.artifacts),
        expires=manifest.expires,
    )
