"""Removable media and the bundles on them, as they claim to be (read only, unverified).

The one media scanner: ``appliance media``, ``appliance import --new`` and the
TUI all use it, with the same rules and limits.

Media are the mount points in ``/proc/self/mountinfo`` whose source block
device the kernel marks removable (``/sys/block/<disk>/removable`` is 1; a
partition such as ``sdb1`` is mapped to its disk ``sdb`` through
``/sys/class/block/sdb1/..``), loop devices mounted under ``/media`` or
``/run/media`` (a disk image a desktop mounted for its user), plus folders
given with ``--media``. On each medium, the bundles are: the medium's own
folder when it holds ``manifest.dsse.json``, its immediate subdirectories that
hold one, and its immediate ``*.tar`` files (any case: ``MODELS.TAR`` on FAT).
Names starting with a dot are skipped (``.Trashes``, macOS ``._MODELS.TAR``).
Immediate ``*.json`` files and those one folder down are listed as documents
(candidate rollback authorizations). Symlinks are never followed (neither to
a bundle nor inside one), nothing is written, nothing is hashed: each bundle
is only peeked at (``bundles.reader.peek``), so stream, sequence and artifact
count are UNVERIFIED, and a broken bundle shows its error code instead.

Bounded cost (docs/CLI.md): at most ``MAX_ENTRIES`` names per folder, a
manifest over ``MAX_LISTED_MANIFEST`` bytes is not read here (the review reads
it), and one scan reads at most ``SCAN_BUDGET`` bytes of manifests; what is
left is listed as "not read yet" and read by a later scan. A ``ScanCache``
(the TUI's scanner process keeps one across polls) re-reads a bundle only when
its manifest's identity (device, inode, size, mtime) changes; an entry it read
carries that identity (``BundleEntry.identity``) so that what is derived from
it (the claimed status) can be cached by it too.

The roots (``mountinfo``, ``sys_root``) are parameters so tests can hand in a
fake ``/proc`` and ``/sys``.
"""

from __future__ import annotations

import os
import re
import stat
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from bundles.errors import ApplianceError, MediaError
from bundles.media import media_error, open_media
from bundles.reader import MANIFEST_FILE, peek

MOUNTINFO = Path("/proc/self/mountinfo")
SYS_ROOT = Path("/sys")
MAX_ENTRIES = 1000  # names looked at in one folder (a medium's top, or one level down)
MAX_MOUNTINFO = 4 << 20
MAX_LISTED_MANIFEST = 1 << 20  # a bigger manifest is left to the review
SCAN_BUDGET = 32 << 20  # bytes of manifests one scan reads (the rest: a later scan)
LOOP_MEDIA_ROOTS = ("/media/", "/run/media/")

__all__ = [
    "BundleEntry",
    "Identity",
    "Medium",
    "Mount",
    "ScanCache",
    "find_bundles",
    "is_removable",
    "natural_key",
    "parse_mountinfo",
    "removable_mounts",
    "scan",
    "unescape",
]


@dataclass(frozen=True)
class Mount:
    mount_point: str
    source: str
    fstype: str
    device: str  # "major:minor"


@dataclass(frozen=True)
class BundleEntry:
    """One bundle on a medium, as its manifest claims (never verified here)."""

    path: str
    format: str  # "dir" | "tar"
    stream: str | None = None
    sequence: int | None = None
    artifacts: int | None = None
    error: ApplianceError | None = None
    total_size: int | None = None
    expires: datetime | None = None
    not_read: str | None = None  # why the manifest was not read by this scan
    claimed: Any = field(default=None, compare=False, repr=False)  # the UNVERIFIED Manifest
    # (device, inode, size, mtime_ns) of the manifest (or tar) this entry was read from
    identity: tuple[int, int, int, int] | None = field(default=None, compare=False, repr=False)

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "stream": self.stream,
            "sequence": self.sequence,
            "artifacts": self.artifacts,
            "not_read": self.not_read,
            "verified": False,
            "error": None
            if self.error is None
            else {"code": self.error.code, "message": self.error.message},
        }


@dataclass(frozen=True)
class Medium:
    path: str
    removable: bool
    source: str  # the mount's source device, or "--media" for a folder given by the user
    bundles: tuple[BundleEntry, ...] = ()
    error: ApplianceError | None = field(default=None)
    documents: tuple[str, ...] = ()  # *.json: candidate rollback authorizations

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "removable": self.removable,
            "source": self.source,
            "bundles": [b.to_dict() for b in self.bundles],
            "documents": list(self.documents),
            "error": None
            if self.error is None
            else {"code": self.error.code, "message": self.error.message},
        }


def unescape(text: str) -> str:
    r"""Undo the kernel's octal escapes in mountinfo fields (``\040`` is a space)."""
    if "\\" not in text:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        chunk = text[i + 1 : i + 4]
        if text[i] == "\\" and len(chunk) == 3 and all(c in "01234567" for c in chunk):
            out.append(chr(int(chunk, 8)))
            i += 4
        else:
            out.append(text[i])
            i += 1
    raw = "".join(out)
    # Escaped bytes are the path's bytes: re-decode them as the file system would.
    try:
        return raw.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return raw


def parse_mountinfo(text: str) -> list[Mount]:
    """Parse ``/proc/<pid>/mountinfo``; malformed lines are skipped.

    ``ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER``
    """
    mounts: list[Mount] = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            sep = fields.index("-", 6)
        except ValueError:
            continue
        if len(fields) < sep + 3 or ":" not in fields[2]:
            continue
        mounts.append(
            Mount(
                mount_point=unescape(fields[4]),
                source=unescape(fields[sep + 2]),
                fstype=unescape(fields[sep + 1]),
                device=fields[2],
            )
        )
    return mounts


def _read_flag(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(16).strip() == b"1"
    except OSError:
        return False


def _block_dir(mount: Mount, sys_root: Path) -> Path | None:
    """The sysfs folder of the mount's block device (by device number, else by name)."""
    candidates = [sys_root / "dev" / "block" / mount.device]
    if mount.source.startswith("/dev/"):
        name = os.path.basename(mount.source)
        if name and name not in (".", ".."):
            candidates.append(sys_root / "class" / "block" / name)
    for candidate in candidates:
        if candidate.exists():
            return Path(os.path.realpath(candidate))
    return None


def is_removable(mount: Mount, sys_root: Path = SYS_ROOT) -> bool:
    """True when the mount's source disk is removable (a partition counts as its disk),
    or it is a loop device mounted under ``/media`` or ``/run/media``."""
    node = _block_dir(mount, sys_root)
    if node is None:
        return False
    disk = node.parent if (node / "partition").exists() else node
    if (disk / "loop").is_dir() or disk.name.startswith("loop"):
        return mount.mount_point.startswith(LOOP_MEDIA_ROOTS)
    return _read_flag(sys_root / "block" / disk.name / "removable") or _read_flag(
        disk / "removable"
    )


def removable_mounts(mountinfo: Path = MOUNTINFO, sys_root: Path = SYS_ROOT) -> list[Mount]:
    """Mounts of removable disks, by mount point, each once (the last mount of a point wins)."""
    try:
        with open(mountinfo, "rb") as f:
            text = f.read(MAX_MOUNTINFO).decode("utf-8", "surrogateescape")
    except OSError:
        return []
    found: dict[str, Mount] = {}
    for mount in parse_mountinfo(text):
        if is_removable(mount, sys_root):
            found[mount.mount_point] = mount
        else:
            found.pop(mount.mount_point, None)  # something else was mounted over it
    return sorted(found.values(), key=lambda m: m.mount_point)


Identity = tuple[int, int, int, int]  # (st_dev, st_ino, st_size, st_mtime_ns)


class ScanCache:
    """What earlier scans read, by path and the identity (device, inode, size, mtime)
    of what was read.

    Thread-safe; the TUI's scanner keeps one for its whole run so that a poll reads
    only what changed. ``scan`` without one reads everything (within the budget).
    ``reads`` counts the manifests read through it (tests count work with it).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[Identity, BundleEntry]] = {}
        self.reads = 0

    def get(self, path: str, key: Identity) -> BundleEntry | None:
        with self._lock:
            hit = self._entries.get(path)
        return hit[1] if hit is not None and hit[0] == key else None

    def put(self, path: str, key: Identity, entry: BundleEntry) -> None:
        with self._lock:
            self._entries[path] = (key, entry)
            self.reads += 1


class _Budget:
    def __init__(self, limit: int) -> None:
        self.left = limit


def _stat_key(st: os.stat_result) -> Identity:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _peek(
    path: str,
    fmt: str,
    size: int,
    cache: ScanCache | None,
    budget: _Budget,
    key: Identity,
) -> BundleEntry:
    if cache is not None:
        hit = cache.get(path, key)
        if hit is not None:
            return hit
    if fmt == "dir" and size > MAX_LISTED_MANIFEST:
        return BundleEntry(
            path, fmt, not_read=f"manifest of {size} bytes: not read here; review it"
        )
    if size > budget.left:
        return BundleEntry(path, fmt, not_read="not read yet (this scan's budget is spent)")
    budget.left -= min(size, MAX_LISTED_MANIFEST) if fmt == "tar" else size
    entry = replace(_read_entry(path, fmt), identity=key)
    if cache is not None:
        cache.put(path, key, entry)
    return entry


def _read_entry(path: str, fmt: str) -> BundleEntry:
    try:
        with open_media(path) as source:
            manifest_size = source.files().get(MANIFEST_FILE)
            if manifest_size is not None and manifest_size > MAX_LISTED_MANIFEST:
                return BundleEntry(
                    path, fmt, not_read=f"manifest of {manifest_size} bytes: not read here"
                )
            _envelope, manifest = peek(source)
    except ApplianceError as e:
        return BundleEntry(path, fmt, error=e)
    return BundleEntry(
        path,
        fmt,
        manifest.stream,
        manifest.sequence,
        len(manifest.artifacts),
        total_size=sum(a.size for a in manifest.artifacts),
        expires=manifest.expires,
        claimed=manifest,
    )


def _manifest_stat(dir_fd: int) -> os.stat_result | None:
    try:
        st = os.stat(MANIFEST_FILE, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def _listing(fd: int, location: str) -> list[os.DirEntry[str]]:
    """Up to ``MAX_ENTRIES`` names of the folder, dot-files skipped, sorted."""
    try:
        with os.scandir(fd) as it:
            entries = [e for _, e in zip(range(MAX_ENTRIES), it, strict=False)]
    except OSError as e:
        raise media_error(location, e) from e
    return sorted(
        (e for e in entries if not e.name.startswith(".")), key=lambda e: natural_key(e.name)
    )


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders ``models-6`` before ``models-10`` (digit runs as numbers)."""
    parts = re.split(r"(\d+)", name)
    return tuple((0, int(p)) if p.isdigit() else (1, p.casefold()) for p in parts if p)


def _json_documents(fd: int, location: str) -> list[str]:
    try:
        return [
            os.path.join(location, e.name)
            for e in _listing(fd, location)
            if e.name.lower().endswith(".json") and e.is_file(follow_symlinks=False)
        ]
    except MediaError:
        return []


def find_bundles(
    folder: str | os.PathLike[str],
    cache: ScanCache | None = None,
    budget: _Budget | None = None,
) -> list[BundleEntry]:
    """The bundles in ``folder`` (itself, immediate subfolders, immediate ``*.tar``).

    Raises ``MediaError`` (exit 3) when the folder is absent or unreadable.
    """
    return _find(folder, cache, budget or _Budget(SCAN_BUDGET))[0]


def _find(
    folder: str | os.PathLike[str], cache: ScanCache | None, budget: _Budget
) -> tuple[list[BundleEntry], list[str]]:
    location = os.fspath(folder)
    try:
        fd = os.open(location, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise media_error(location, e) from e
    found: list[BundleEntry] = []
    documents: list[str] = []
    try:
        top = _manifest_stat(fd)
        if top is not None:
            found.append(_peek(location, "dir", top.st_size, cache, budget, _stat_key(top)))
            return found, documents
        for entry in _listing(fd, location):
            path = os.path.join(location, entry.name)
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                try:
                    sub = os.open(
                        entry.name,
                        os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                        dir_fd=fd,
                    )
                except OSError:
                    continue
                try:
                    mst = _manifest_stat(sub)
                    if mst is None:
                        documents += _json_documents(sub, path)
                finally:
                    os.close(sub)
                if mst is not None:
                    found.append(_peek(path, "dir", mst.st_size, cache, budget, _stat_key(mst)))
            elif stat.S_ISREG(st.st_mode) and entry.name.lower().endswith(".tar"):
                found.append(_peek(path, "tar", st.st_size, cache, budget, _stat_key(st)))
            elif stat.S_ISREG(st.st_mode) and entry.name.lower().endswith(".json"):
                documents.append(path)
    finally:
        os.close(fd)
    return found, documents


def _medium(
    path: str,
    removable: bool,
    source: str,
    cache: ScanCache | None,
    budget: _Budget,
    *,
    strict: bool,
) -> Medium:
    try:
        bundles, documents = _find(path, cache, budget)
        return Medium(path, removable, source, tuple(bundles), documents=tuple(documents))
    except MediaError as e:
        if strict:
            raise
        return Medium(path, removable, source, (), e)


def scan(
    extra: Sequence[str | os.PathLike[str]] = (),
    *,
    mountinfo: Path = MOUNTINFO,
    sys_root: Path = SYS_ROOT,
    cache: ScanCache | None = None,
    auto: bool = True,
    strict: bool = True,
) -> list[Medium]:
    """Removable media, then the ``extra`` folders (each once); bundles peeked, unverified.

    A folder given in ``extra`` that is absent or unreadable raises ``MediaError``
    (exit 3), unless ``strict`` is false (the TUI: it is listed with its error, as an
    unreadable removable mount always is).
    """
    media: list[Medium] = []
    seen: set[str] = set()
    budget = _Budget(SCAN_BUDGET)
    for folder in extra if strict else ():
        location = os.fspath(folder)
        try:
            os.stat(location)
        except OSError as e:
            raise media_error(location, e) from e
    for mount in removable_mounts(mountinfo, sys_root) if auto else []:
        seen.add(os.path.realpath(mount.mount_point))
        media.append(_medium(mount.mount_point, True, mount.source, cache, budget, strict=False))
    for folder in extra:
        location = os.fspath(folder)
        real = os.path.realpath(location)
        if real in seen:
            continue
        seen.add(real)
        media.append(_medium(location, False, "--media", cache, budget, strict=strict))
    return media
