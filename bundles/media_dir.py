"""A bundle directory read in place, never following a symlink.

The tree is listed once with ``os.scandir`` on directory descriptors (each
directory opened ``O_NOFOLLOW`` relative to its parent), so a path component
swapped for a symlink later is refused rather than followed. Files are opened
the same way, component by component, and must still be the regular file (same
device and inode) that was listed.

The folder a file is opened in is opened once and its descriptor kept (up to
``DIR_CACHE`` folders; beyond that, per file as before), its device and inode
checked against the listing: 20,000 files of one folder cost one ``openat`` of
that folder, not 20,000. A held descriptor keeps naming the folder that was
listed even if a path component is swapped later, and every file opened in it
is still checked against its listed inode, so a swap is refused as before.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
import types
from collections.abc import Mapping

from bundles.errors import (
    ArchiveLinkError,
    ArchiveSpecialFileError,
    ArtifactMissingError,
    MediaChangedError,
    MediaError,
    NestingTooDeepError,
    TooManyArtifactsError,
)
from bundles.media import (
    MAX_DEPTH,
    MAX_ENTRIES,
    MediaSource,
    MemberReader,
    NameTable,
    check_member_name,
    media_error,
)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
DIR_CACHE = 64  # folder descriptors a source keeps for opening its files (never evicted)


class DirectorySource(MediaSource):
    def __init__(self, location: str) -> None:
        self.location = location
        try:
            self._root = os.open(location, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise media_error(location, e) from e
        self._ids: dict[str, tuple[int, int]] = {}
        self._dir_ids: dict[str, tuple[int, int]] = {}  # each listed folder's device, inode
        self._dirs: dict[str, int] = {}  # folder (relative path) -> its kept descriptor
        self._dirs_lock = threading.Lock()  # files are opened from several threads
        self._sizes: dict[str, int] = {}
        self._count = 0
        self._names = NameTable()
        try:
            self._walk(self._root, "", 0)
        except BaseException:
            os.close(self._root)
            raise
        self._files = types.MappingProxyType(self._sizes)

    def _walk(self, dir_fd: int, prefix: str, depth: int) -> None:
        try:
            with os.scandir(dir_fd) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            raise media_error(f"{self.location}/{prefix}", e) from e
        for entry in entries:
            self._count += 1
            if self._count > MAX_ENTRIES:
                raise TooManyArtifactsError(
                    f"{self.location} holds more than {MAX_ENTRIES} files and directories"
                )
            rel = check_member_name(prefix + entry.name)
            if depth + 1 > MAX_DEPTH:
                raise NestingTooDeepError(f"{rel!r} is nested deeper than {MAX_DEPTH} levels")
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError as e:
                raise media_error(f"{self.location}/{rel}", e) from e
            if stat.S_ISLNK(st.st_mode):
                raise ArchiveLinkError(f"refusing symlink {rel!r} in {self.location}")
            if stat.S_ISDIR(st.st_mode):
                self._names.add(rel, True)
                self._dir_ids[rel] = (st.st_dev, st.st_ino)
                sub = self._open_dir(dir_fd, entry.name, rel, st)
                try:
                    self._walk(sub, rel + "/", depth + 1)
                finally:
                    os.close(sub)
            elif stat.S_ISREG(st.st_mode):
                self._names.add(rel, False)
                self._ids[rel] = (st.st_dev, st.st_ino)
                self._sizes[rel] = st.st_size
            else:
                raise ArchiveSpecialFileError(
                    f"refusing {rel!r}: not a regular file or directory (device, FIFO or socket)"
                )

    def _open_dir(self, dir_fd: int, name: str, rel: str, st: os.stat_result | None) -> int:
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise ArchiveLinkError(f"refusing {rel!r}: not a plain directory") from e
            raise media_error(f"{self.location}/{rel}", e) from e
        if st is not None:
            try:
                now = os.fstat(fd)
            except OSError as e:
                os.close(fd)
                raise media_error(f"{self.location}/{rel}", e) from e
            if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                os.close(fd)
                raise _changed(self.location, rel)
        return fd

    def files(self) -> Mapping[str, int]:
        return self._files

    def open(self, path: str) -> MemberReader:
        ids = self._ids.get(path)
        if ids is None:
            raise ArtifactMissingError(f"{path!r} is not in {self.location}")
        folder, _, leaf = path.rpartition("/")
        fd, kept = self._folder(folder)
        try:
            try:
                file_fd = os.open(leaf, _FILE_FLAGS, dir_fd=fd)
            except OSError as e:
                if e.errno == errno.ELOOP:
                    raise ArchiveLinkError(f"refusing symlink {path!r}") from e
                if e.errno == errno.ENOENT:
                    raise _changed(self.location, path) from e
                raise media_error(f"{self.location}/{path}", e) from e
        finally:
            if not kept:
                os.close(fd)
        try:
            st = os.fstat(file_fd)
        except OSError as e:
            os.close(file_fd)
            raise media_error(f"{self.location}/{path}", e) from e
        if not stat.S_ISREG(st.st_mode):
            os.close(file_fd)
            raise ArchiveSpecialFileError(f"refusing {path!r}: not a regular file")
        if (st.st_dev, st.st_ino) != ids:
            os.close(file_fd)
            raise _changed(self.location, path)
        return MemberReader(
            file_fd,
            0,
            st.st_size,
            owns_fd=True,
            growable=True,
            location=f"{self.location}/{path}",
        )

    def _folder(self, folder: str) -> tuple[int, bool]:
        """A descriptor of the listed folder ``folder`` ("" is the root) and whether it is
        kept (else the caller closes it). Opened component by component ``O_NOFOLLOW``
        from the root; one that is kept was checked against the listed device and inode."""
        if not folder:
            return self._root, True
        with self._dirs_lock:
            fd = self._dirs.get(folder)
            if fd is not None:
                return fd, True
        parts = folder.split("/")
        fd = self._root
        try:
            for i, comp in enumerate(parts):
                sub = self._open_dir(fd, comp, "/".join(parts[: i + 1]), None)
                if fd != self._root:
                    os.close(fd)
                fd = sub
        except BaseException:
            if fd != self._root:
                os.close(fd)
            raise
        with self._dirs_lock:
            if folder in self._dirs or len(self._dirs) >= DIR_CACHE or self._root < 0:
                return fd, False  # another thread kept one meanwhile, or no room
            try:
                now = os.fstat(fd)
            except OSError as e:
                os.close(fd)
                raise media_error(f"{self.location}/{folder}", e) from e
            if (now.st_dev, now.st_ino) != self._dir_ids.get(folder):
                os.close(fd)
                raise _changed(self.location, folder)
            self._dirs[folder] = fd
            return fd, True

    def close(self) -> None:
        with self._dirs_lock:
            for fd in self._dirs.values():
                os.close(fd)
            self._dirs.clear()
        if self._root >= 0:
            os.close(self._root)
            self._root = -1


def _changed(location: str, path: str) -> MediaError:
    return MediaChangedError(f"{location}: {path!r} changed since it was listed")
