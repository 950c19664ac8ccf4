"""One uncompressed tar, read by offsets; ``tarfile`` only parses the headers.

Nothing is extracted and ``extractfile`` is never called: member data is read
with ``os.preadv`` from ``offset_data``. Every member is checked while the
headers are walked: only regular files and directories, safe and unique names,
data inside the file, a bounded member count, and a proper end-of-archive
block. Whatever ``tarfile`` raises on hostile bytes becomes an ``ArchiveError``.
"""

from __future__ import annotations

import os
import re
import stat
import struct
import tarfile
import types
from collections.abc import Mapping
from typing import IO, cast

from bundles.errors import (
    ArchiveError,
    ArchiveLinkError,
    ArchiveSpecialFileError,
    ArtifactMissingError,
    NestingTooDeepError,
    NotABundleError,
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
    printable,
)

BLOCK = 512
# No header record (pax or GNU long name) needs more than this; a bigger read is hostile.
MAX_HEADER_READ = 1024 * 1024
_COMPRESSED = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"PK\x03\x04", "zip"),
)
# What tarfile may raise on hostile header bytes (besides our own errors).
_TAR_ERRORS = (
    tarfile.TarError,
    EOFError,
    UnicodeError,
    ValueError,
    OverflowError,
    struct.error,
    KeyError,
    IndexError,
    TypeError,
    RecursionError,
)


# Pax extended headers (local, global, Solaris): their records are checked before tarfile's.
_PAX_TYPES = (b"x", b"g", b"X")
_PAX_LENGTH_DIGITS = 7  # a record is at most MAX_HEADER_READ (1 MiB) long: 7 digits
_DIGITS = frozenset(b"0123456789")
# tarfile before 3.11.10 also searches the whole header for r"\d+ hdrcharset=": quadratic in
# the longest run of digits. No honest field (times, sizes, ids) has a run this long.
MAX_PAX_DIGIT_RUN = 64
_LONG_DIGIT_RUN = re.compile(rb"[0-9]{%d}" % (MAX_PAX_DIGIT_RUN + 1))


def check_pax_records(buf: bytes, location: str) -> int:
    """Check a pax extended header's raw bytes in one linear pass, before tarfile parses
    them; returns how many records it checked. Every loop moves forward only: each byte
    is inspected a bounded number of times.

    The header is ``"LENGTH KEYWORD=VALUE\n"`` records tiling the buffer up to the
    first NUL at a record boundary, then NULs only. CPython's tarfile before 3.11.10
    (CVE-2024-6232) parses these with backtracking regular expressions whose cost is
    quadratic in hostile input (for example ``"2 2 2 ... ="``, or a long run of digits
    where GNU sparse maps are looked for). So: a length of 1 to 7 decimal digits then a
    space, at least 5, inside the buffer, the record ending with a newline, a non-empty
    keyword ended by ``=`` inside the record; no ``GNU.sparse.*`` keywords (sparse members
    are refused anyway); no run of more than ``MAX_PAX_DIGIT_RUN`` digits. Anything else
    is refused (``archive_corrupt``, ``archive_special_file``) before tarfile sees it;
    each regular expression then stays within one well-formed record, so its work is
    linear too.
    """
    n = len(buf)
    pos = 0
    records = 0
    while pos < n and buf[pos] != 0:
        records += 1
        digits = 0
        while pos + digits < n and buf[pos + digits] in _DIGITS:
            digits += 1
            if digits > _PAX_LENGTH_DIGITS:
                raise ArchiveError(f"{location}: a pax header record length has too many digits")
        if digits == 0 or pos + digits >= n or buf[pos + digits] != 0x20:
            raise ArchiveError(f"{location}: a pax header record has no length field")
        length = int(buf[pos : pos + digits])
        end = pos + length  # one past the record's newline
        if length < 5 or end > n or buf[end - 1] != 0x0A:
            raise ArchiveError(f"{location}: a pax header record has a wrong length ({length})")
        equals = buf.find(b"=", pos + digits + 1, end - 1)
        if equals <= pos + digits + 1:
            raise ArchiveError(f"{location}: a pax header record has no keyword")
        if buf.startswith(b"GNU.sparse.", pos + digits + 1, equals):
            raise ArchiveSpecialFileError(f"refusing a GNU sparse member in {location}")
        pos = end
    if buf.count(0, pos) != n - pos:
        raise ArchiveError(f"{location}: bytes after the last pax header record")
    if _LONG_DIGIT_RUN.search(buf) is not None:
        raise ArchiveError(
            f"{location}: a pax header holds a run of more than {MAX_PAX_DIGIT_RUN} digits"
        )
    return records


class _HeaderFile:
    """A minimal read-only file object over ``os.pread`` for ``tarfile``'s header walk.

    tarfile reads each header as one 512-byte block and a pax header's body with
    the next read, at the block after it: that read is checked by
    ``check_pax_records`` before tarfile gets the bytes. ``pax_headers``,
    ``pax_bytes_inspected`` and ``pax_records`` count the work (tests pin it linear).
    """

    def __init__(self, fd: int, size: int, location: str) -> None:
        self._fd = fd
        self._size = size
        self._pos = 0
        self._location = location
        self._pax_body_at = -1  # where the body of the last pax header read starts
        self.pax_headers = 0
        self.pax_bytes_inspected = 0
        self.pax_records = 0

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self._size - self._pos
        if n > MAX_HEADER_READ:
            raise ArchiveError(
                f"{self._location}: a tar header record of {n} bytes is over the limit"
            )
        try:
            data = os.pread(self._fd, n, self._pos)
        except OSError as e:
            raise media_error(self._location, e) from e
        if self._pos == self._pax_body_at:
            self._pax_body_at = -1
            self.pax_headers += 1
            self.pax_bytes_inspected += len(data)
            self.pax_records += check_pax_records(data, self._location)
        elif n == BLOCK and len(data) == BLOCK and data[156:157] in _PAX_TYPES:
            self._pax_body_at = self._pos + BLOCK
        self._pos += len(data)
        return data

    def seek(self, pos: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True


def _starts_like_tar(block: bytes) -> bool:
    """A whole first block that is a tar header with a valid checksum, or all zeros
    (an empty archive). A text file, an image or an empty file is not a tar at all:
    an operator's mistake (exit 2), not a corrupt archive."""
    if len(block) < BLOCK:
        return False
    if block.count(0) == BLOCK:
        return True
    try:
        tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


class TarSource(MediaSource):
    def __init__(self, location: str) -> None:
        self.location = location
        try:
            self._fd = os.open(location, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
        except OSError as e:
            raise media_error(location, e) from e
        try:
            st = os.fstat(self._fd)
            if not stat.S_ISREG(st.st_mode):
                raise NotABundleError(f"{location} is not a regular file")
            self._members: dict[str, tuple[int, int]] = {}
            self._scan(st.st_size)
        except OSError as e:
            os.close(self._fd)
            raise media_error(location, e) from e
        except BaseException:
            os.close(self._fd)
            raise
        self._files = types.MappingProxyType({k: v[1] for k, v in self._members.items()})

    def _scan(self, file_size: int) -> None:
        head = os.pread(self._fd, 8, 0)
        for magic, kind in _COMPRESSED:
            if head.startswith(magic):
                raise ArchiveError(
                    f"{self.location} is {kind}-compressed; only an uncompressed tar is read"
                )
        if not _starts_like_tar(os.pread(self._fd, BLOCK, 0)):
            raise NotABundleError(
                f"{self.location} is neither a bundle directory nor a tar file (its first "
                "block is no tar header); give a bundle folder or a bundle's .tar"
            )
        header = _HeaderFile(self._fd, file_size, self.location)
        names = NameTable()
        count = 0
        try:
            tf = tarfile.open(
                fileobj=cast(IO[bytes], header),
                mode="r:",
                encoding="utf-8",
                errors="surrogateescape",
            )
            while True:
                member = tf.next()
                if member is None:
                    break
                count += 1
                if count > MAX_ENTRIES:
                    raise TooManyArtifactsError(
                        f"{self.location} holds more than {MAX_ENTRIES} members"
                    )
                self._member(member, names, file_size)
            end = tf.offset
        except _TAR_ERRORS as e:
            reason = printable(str(e)) or type(e).__name__
            raise ArchiveError(f"{self.location} is not a readable tar: {reason}") from e
        self._check_end(end, file_size)

    def _member(self, member: tarfile.TarInfo, names: NameTable, file_size: int) -> None:
        raw = member.name
        is_dir = member.type == tarfile.DIRTYPE
        if is_dir and raw.endswith("/"):
            raw = raw[:-1]
        if raw.startswith("./"):
            raw = raw[2:]
        if is_dir and raw in (".", ""):
            return  # the archive's own root, as "tar -C DIR ." writes it
        name = check_member_name(raw)
        if member.type in (tarfile.SYMTYPE, tarfile.LNKTYPE):
            raise ArchiveLinkError(f"refusing link member {name!r} in {self.location}")
        if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE) or (
            member.sparse is not None
        ):
            kind = {
                tarfile.CHRTYPE: "character device",
                tarfile.BLKTYPE: "block device",
                tarfile.FIFOTYPE: "FIFO",
                tarfile.CONTTYPE: "contiguous file",
                tarfile.GNUTYPE_SPARSE: "sparse file",
            }.get(member.type, "special")
            raise ArchiveSpecialFileError(f"refusing {kind} member {name!r}")
        if name.count("/") + 1 > MAX_DEPTH:
            raise NestingTooDeepError(f"{name!r} is nested deeper than {MAX_DEPTH} levels")
        if member.size < 0 or member.offset_data + member.size > file_size:
            raise ArchiveError(f"member {name!r} extends past the end of {self.location}")
        names.add(name, is_dir)
        if is_dir:
            if member.size:
                raise ArchiveError(f"directory member {name!r} carries data")
            return
        self._members[name] = (member.offset_data, member.size)

    def _check_end(self, end: int, file_size: int) -> None:
        block = os.pread(self._fd, BLOCK, end) if end < file_size else b""
        if len(block) < BLOCK:
            raise ArchiveError(f"{self.location} ends without an end-of-archive block (truncated?)")
        if block.count(0) != BLOCK:
            raise ArchiveError(f"{self.location} has a corrupt tar header at byte {end}")

    def files(self) -> Mapping[str, int]:
        return self._files

    def open(self, path: str) -> MemberReader:
        entry = self._members.get(path)
        if entry is None:
            raise ArtifactMissingError(f"{path!r} is not in {self.location}")
        offset, size = entry
        try:
            fd = os.dup(self._fd)  # the reader's own: valid even after the source is closed
        except OSError as e:
            raise media_error(self.location, e) from e
        return MemberReader(
            fd,
            offset,
            size,
            owns_fd=True,
            growable=False,
            location=f"{self.location}:{path}",
        )

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
