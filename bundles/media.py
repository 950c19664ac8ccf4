"""A bundle on media: a directory read in place, or one uncompressed tar read by offsets.

The media is hostile and only ever read. Both sources list every regular file
once, up front, refusing links, special files, unsafe or colliding names and
oversized trees; then they hand out ``MemberReader`` objects that read one file
with ``os.preadv`` into the caller's buffer. Nothing here maps media files (a
file that shrinks under a mapping kills the process with SIGBUS) and nothing is
ever extracted. ``open_media`` picks the source; the two implementations live in
``bundles.media_dir`` and ``bundles.media_tar``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping

from bundles.closing import Closing
from bundles.errors import (
    ArchiveDuplicateError,
    ArchiveUnsafePathError,
    ArtifactMissingError,
    BadNameError,
    BundleNotFoundError,
    ManifestTooLargeError,
    MediaChangedError,
    MediaError,
    NotABundleError,
    PathTooLongError,
    UnsafePathError,
)
from bundles.names import check_relative_path, fold

# Files and directories in one bundle: a bundle of the most artifacts the manifest allows
# (bundles.manifest.MAX_ARTIFACTS, 100,000) lays each out as artifacts/NAME/VERSION/FILE,
# three entries; one more per artifact on average for split parts, and room for the
# top level and trust documents.
MAX_ENTRIES = 4 * 100_000 + 1024
MAX_DEPTH = 32


class MemberReader(Closing):
    """Exactly one file (or tar member) on media, read by offset, never past its end.

    ``fd`` is an OS descriptor of the underlying file and ``offset`` where the
    member's bytes start in it (0 for a file of a directory bundle). The reader
    keeps its own position; it never moves the descriptor's file offset.
    """

    def __init__(
        self, fd: int, offset: int, size: int, *, owns_fd: bool, growable: bool, location: str
    ) -> None:
        self.fd = fd
        self.offset = offset
        self._size = size
        self._owns_fd = owns_fd
        self._growable = growable
        self.location = location
        self.pos = 0
        self._closed = False
        # A growable member's ``size`` came from the opener's ``fstat`` a moment ago: the
        # first ``size`` (the size check made on opening) is that one, not a second
        # ``fstat``; every later one looks again (the checks after reading).
        self._fresh = growable

    @property
    def size(self) -> int:
        """The size on the media right now (a directory file is re-examined each time)."""
        if self._fresh:
            self._fresh = False
        elif self._growable:
            try:
                self._size = os.fstat(self.fd).st_size
            except OSError as e:
                raise media_error(self.location, e) from e
        return self._size

    def readinto(self, buf: memoryview | bytearray) -> int:
        """Read at the current position into ``buf``; 0 at the member's end."""
        view = memoryview(buf).cast("B")
        want = len(view)
        if not self._growable:
            want = min(want, self._size - self.pos)
        if want <= 0:
            return 0
        try:
            got = os.preadv(self.fd, [view[:want]], self.offset + self.pos)
        except OSError as e:
            raise media_error(self.location, e) from e
        self.pos += got
        return got

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._owns_fd:
                os.close(self.fd)


class MediaSource(Closing):
    """Abstract: the regular files of one bundle on media."""

    location: str

    def files(self) -> Mapping[str, int]:
        """Every regular file: relative POSIX path -> size (as listed)."""
        raise NotImplementedError

    def open(self, path: str) -> MemberReader:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def read_bytes(self, path: str, limit: int, what: str) -> bytes:
        """The whole of a small file (the manifest, a trust update); over ``limit`` is
        refused before it is read. Read once per source: every later call gets the same
        bytes, so all that one import (or one preview) decides about a document, and the
        identity of what an operator reviewed, is decided on one read of it, even from a
        device that answers each read differently."""
        cache = self._read_once()
        got = cache.get(path)
        if got is None:
            got = cache[path] = self._read_small(path, limit, what)
        elif len(got) > limit:
            raise ManifestTooLargeError(f"{what} is {len(got)} bytes, over the {limit} byte limit")
        return got

    def _read_once(self) -> dict[str, bytes]:
        cache: dict[str, bytes] | None = getattr(self, "_small_files", None)
        if cache is None:
            cache = {}
            self._small_files = cache
        return cache

    def _read_small(self, path: str, limit: int, what: str) -> bytes:
        size = self.files().get(path)
        if size is None:
            raise ArtifactMissingError(f"{what} {path!r} is not in {self.location}")
        if size > limit:
            raise ManifestTooLargeError(f"{what} is {size} bytes, over the {limit} byte limit")
        with self.open(path) as member:
            buf = bytearray(min(member.size, limit) + 1)
            view = memoryview(buf)
            got = 0
            while got < len(buf):
                n = member.readinto(view[got:])
                if n == 0:
                    break
                got += n
            if got > limit:
                raise ManifestTooLargeError(f"{what} grew past the {limit} byte limit while read")
            if got < member.size:
                raise MediaChangedError(f"{what} {path!r} in {self.location} shrank while read")
        return bytes(buf[:got])


def printable(text: str, limit: int = 200) -> str:
    """Hostile text made safe for one line of a message (escapes, bounded length)."""
    out = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit])
    return out + ("..." if len(text) > limit else "")


def media_error(location: str, e: OSError) -> MediaError:
    """An ``OSError`` on media, as a one-line ``MediaError``."""
    reason = e.strerror or type(e).__name__
    if isinstance(e, FileNotFoundError):
        return BundleNotFoundError(f"{location}: not found ({reason})")
    return MediaError(f"{location}: cannot read media ({reason})")


def check_member_name(name: str) -> str:
    """A member name under the ``check_relative_path`` rules, as an archive error."""
    try:
        return check_relative_path(name, "member name")
    except (UnsafePathError, BadNameError) as e:
        raise ArchiveUnsafePathError(f"refusing {e.message}") from e
    except PathTooLongError as e:
        raise PathTooLongError(f"refusing {e.message}") from e


class NameTable:
    """Collects member names; refuses exact, case-fold and Unicode look-alike duplicates.

    A file and a directory of the same name collide too (``a`` as a file and
    ``a/b``). ``add`` takes a checked name; parents are registered implicitly.
    """

    def __init__(self) -> None:
        self._seen: dict[str, tuple[str, bool, bool]] = {}  # folded -> (name, is_dir, explicit)

    def add(self, name: str, is_dir: bool) -> None:
        parts = name.split("/")
        for i in range(1, len(parts)):
            self._put("/".join(parts[:i]), True, explicit=False)
        self._put(name, is_dir, explicit=True)

    def _put(self, name: str, is_dir: bool, *, explicit: bool) -> None:
        key = fold(name)
        seen = self._seen.get(key)
        if seen is None:
            self._seen[key] = (name, is_dir, explicit)
            return
        seen_name, seen_dir, seen_explicit = seen
        if seen_name != name:
            raise ArchiveDuplicateError(f"member {name!r} collides with {seen_name!r}")
        if is_dir != seen_dir:
            raise ArchiveDuplicateError(f"{name!r} is both a file and a directory")
        if not is_dir or (explicit and seen_explicit):
            raise ArchiveDuplicateError(f"member {name!r} appears twice")
        self._seen[key] = (name, True, explicit or seen_explicit)


def open_media(path: str | os.PathLike[str]) -> MediaSource:
    """Open a bundle directory or tar file for reading (exit 3 when absent/unreadable)."""
    from bundles.media_dir import DirectorySource
    from bundles.media_tar import TarSource

    location = os.fspath(path)
    try:
        st = os.stat(location)
    except OSError as e:
        raise media_error(location, e) from e
    if stat.S_ISDIR(st.st_mode):
        return DirectorySource(location)
    if stat.S_ISREG(st.st_mode):
        return TarSource(location)
    raise NotABundleError(f"{location} is neither a bundle directory nor a tar file")
