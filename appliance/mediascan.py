"""Removable media and the bundles on them, as they claim to be (read only, unverified).

Media are the mount points in ``/proc/self/mountinfo`` whose source block
device the kernel marks removable (``/sys/block/<disk>/removable`` is 1; a
partition such as ``sdb1`` is mapped to its disk ``sdb`` through
``/sys/class/block/sdb1/..``), plus folders given with ``--media``. On each
medium, the bundles are: the medium's own folder when it holds
``manifest.dsse.json``, its immediate subdirectories that hold one, and its
immediate ``*.tar`` files. Symlinks are never followed (neither to a bundle
nor inside one), nothing is written, nothing is hashed: each bundle is only
peeked at (``bundles.reader.peek``), so stream, sequence and artifact count are
UNVERIFIED, and a broken bundle shows its error code instead.

The roots (``mountinfo``, ``sys_root``) are parameters so tests can hand in a
fake ``/proc`` and ``/sys``.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bundles.errors import ApplianceError, MediaError
from bundles.media import media_error, open_media
from bundles.reader import MANIFEST_FILE, peek

MOUNTINFO = Path("/proc/self/mountinfo")
SYS_ROOT = Path("/sys")
MAX_ENTRIES = 1000  # entries looked at in one medium's top folder
MAX_MOUNTINFO = 4 << 20

__all__ = [
    "BundleEntry",
    "Medium",
    "Mount",
    "find_bundles",
    "is_removable",
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "stream": self.stream,
            "sequence": self.sequence,
            "artifacts": self.artifacts,
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "removable": self.removable,
            "source": self.source,
            "bundles": [b.to_dict() for b in self.bundles],
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
    """True when the mount's source disk is removable (a partition counts as its disk)."""
    node = _block_dir(mount, sys_root)
    if node is None:
        return False
    disk = node.parent if (node / "partition").exists() else node
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


def _peek(path: str, fmt: str) -> BundleEntry:
    try:
        with open_media(path) as source:
            _envelope, manifest = peek(source)
    except ApplianceError as e:
        return BundleEntry(path, fmt, error=e)
    return BundleEntry(path, fmt, manifest.stream, manifest.sequence, len(manifest.artifacts))


def _holds_manifest(dir_fd: int) -> bool:
    try:
        st = os.stat(MANIFEST_FILE, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode)


def find_bundles(folder: str | os.PathLike[str]) -> list[BundleEntry]:
    """The bundles in ``folder`` (itself, immediate subfolders, immediate ``*.tar``).

    Raises ``MediaError`` (exit 3) when the folder is absent or unreadable.
    """
    location = os.fspath(folder)
    try:
        fd = os.open(location, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise media_error(location, e) from e
    found: list[BundleEntry] = []
    try:
        if _holds_manifest(fd):
            found.append(_peek(location, "dir"))
        try:
            with os.scandir(fd) as it:
                entries = sorted(
                    (e for _, e in zip(range(MAX_ENTRIES), it, strict=False)), key=lambda e: e.name
                )
        except OSError as e:
            raise media_error(location, e) from e
        for entry in entries:
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
                    holds = _holds_manifest(sub)
                finally:
                    os.close(sub)
                if holds:
                    found.append(_peek(path, "dir"))
            elif stat.S_ISREG(st.st_mode) and entry.name.lower().endswith(".tar"):
                found.append(_peek(path, "tar"))
    finally:
        os.close(fd)
    return found


def _medium(path: str, removable: bool, source: str, *, strict: bool) -> Medium:
    try:
        return Medium(path, removable, source, tuple(find_bundles(path)))
    except MediaError as e:
        if strict:
            raise
        return Medium(path, removable, source, (), e)


def scan(
    extra: tuple[str | os.PathLike[str], ...] | list[str | os.PathLike[str]] = (),
    *,
    mountinfo: Path = MOUNTINFO,
    sys_root: Path = SYS_ROOT,
) -> list[Medium]:
    """Removable media, then the ``extra`` folders (each once); bundles peeked, unverified.

    A folder given in ``extra`` that is absent or unreadable raises ``MediaError``
    (exit 3); an unreadable removable mount is listed with its error instead.
    """
    media: list[Medium] = []
    seen: set[str] = set()
    for folder in extra:
        location = os.fspath(folder)
        try:
            os.stat(location)
        except OSError as e:
            raise media_error(location, e) from e
    for mount in removable_mounts(mountinfo, sys_root):
        seen.add(os.path.realpath(mount.mount_point))
        media.append(_medium(mount.mount_point, True, mount.source, strict=False))
    for folder in extra:
        location = os.fspath(folder)
        real = os.path.realpath(location)
        if real in seen:
            continue
        seen.add(real)
        media.append(_medium(location, False, "--media", strict=True))
    return media
