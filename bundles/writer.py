"""Writing a bundle (connected side): a directory, or one uncompressed PAX tar.

Sources are hashed with BLAKE3 in parallel, their size and identity are
checked again after the copy (a source that changes while bundling is refused),
and the manifest is parsed back before it is signed, so the writer never signs
what the reader would refuse. The output appears whole or not at all: it is
built beside OUT and renamed into place.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import re
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from bundles.dsse import Envelope, sign_envelope
from bundles.durable import sync_filesystem
from bundles.errors import (
    ApplianceError,
    BadNameError,
    DuplicateNameError,
    InputNotFoundError,
    OperationalError,
    OutputExistsError,
    PathTooLongError,
    SourceChangedError,
    UnsafePathError,
    UsageError,
)
from bundles.fields import MAX_INT
from bundles.hashing import hash_paths
from bundles.keys import PrivateKey
from bundles.manifest import ARTIFACT_PREFIX, PAYLOAD_TYPE, Artifact, Manifest, Part
from bundles.names import (
    check_artifact_name,
    check_identifier,
    check_relative_path,
    check_unique,
)
from bundles.reader import MANIFEST_FILE, MAX_TRUST_FILE_BYTES, TRUST_DIR
from bundles.timeutil import utcnow

DEFAULT_MEDIA_TYPE = "application/octet-stream"
_MEDIA_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*$")
_COPY_CHUNK = 1 << 30


@dataclass
class ArtifactSpec:
    name: str
    version: str
    path: Path
    media_type: str = DEFAULT_MEDIA_TYPE
    release: int | None = None
    sha256: bool = False  # list its SHA-256 too (a sha256 model signature covers it)


@dataclass(frozen=True)
class _Source:
    spec: ArtifactSpec
    stat: os.stat_result
    files: tuple[Part, ...]  # where it goes in the bundle (one part or several)


def _usage(e: ApplianceError, what: str) -> UsageError:
    return UsageError(f"{what}: {e.message}")


def _check_inputs(
    specs: Sequence[ArtifactSpec], stream: str, sites: Sequence[str], any_site: bool
) -> None:
    if not specs:
        raise UsageError("a bundle needs at least one artifact")
    if any_site == bool(sites):
        raise UsageError("name the sites (--site ID ...) or say --any-site; exactly one of them")
    try:
        check_identifier(stream, "stream")
        for site in sites:
            check_identifier(site, "site")
        check_unique(sites, "site")
        for spec in specs:
            check_artifact_name(spec.name)
            check_identifier(spec.version, f"version of {spec.name}")
            if not _MEDIA_TYPE.match(spec.media_type) or len(spec.media_type) > 255:
                raise BadNameError(
                    f"media type {spec.media_type!r} of {spec.name} is not type/subtype"
                )
            if spec.release is not None and not 1 <= spec.release <= MAX_INT:
                raise BadNameError(f"release counter of {spec.name} must be in [1, 2^53-1]")
        check_unique((s.name for s in specs), "artifact name")
    except (BadNameError, DuplicateNameError) as e:
        raise _usage(e, "bad bundle input") from e


def _layout(spec: ArtifactSpec, size: int, part_size: int | None) -> tuple[str, tuple[Part, ...]]:
    base = spec.path.name
    try:
        check_relative_path(base)
    except (BadNameError, UnsafePathError, PathTooLongError):
        base = "data"
    path = f"{ARTIFACT_PREFIX}{spec.name}/{spec.version}/{base}"
    try:
        check_relative_path(path)
    except PathTooLongError as e:
        raise _usage(e, f"artifact {spec.name}") from e
    if part_size is None or size <= part_size:
        return path, ()
    count = -(-size // part_size)
    if count > 9999:
        raise UsageError(f"{spec.name}: {count} parts; use a larger --part-size")
    parts = tuple(
        Part(f"{path}.part{i:04d}", min(part_size, size - i * part_size)) for i in range(count)
    )
    return path, parts


def _stat_source(spec: ArtifactSpec) -> os.stat_result:
    try:
        st = os.stat(spec.path)
    except FileNotFoundError as e:
        raise InputNotFoundError(f"{spec.path}: no such file") from e
    except OSError as e:
        raise OperationalError(f"{spec.path}: {e.strerror}") from e
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{spec.path} is not a regular file")
    return st


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino, a.st_size, a.st_mtime_ns) == (
        b.st_dev,
        b.st_ino,
        b.st_size,
        b.st_mtime_ns,
    )


def _changed(path: Path) -> OperationalError:
    return SourceChangedError(f"{path} changed while it was bundled")


def _copy_range(src: int, dst: int, offset: int, count: int) -> None:
    """Copy ``count`` bytes of ``src`` from ``offset`` to ``dst``'s current position."""
    done = 0
    fast = True
    while done < count:
        n = 0
        if fast:
            try:
                n = os.copy_file_range(src, dst, min(count - done, _COPY_CHUNK), offset + done)
            except OSError as e:
                if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                    raise
                fast = False
                continue
        else:
            data = os.pread(src, min(count - done, 1 << 20), offset + done)
            n = len(data)
            if n:
                view = memoryview(data)
                while view:
                    view = view[os.write(dst, view) :]
        if n == 0:
            raise EOFError
        done += n


def _write_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_directory(
    root: Path, sources: Sequence[_Source], manifest_bytes: bytes, trust: Sequence[bytes]
) -> None:
    made: set[Path] = set()
    for src in sources:
        fd = os.open(src.spec.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            offset = 0
            for part in src.files:
                dest = root / part.path
                if dest.parent not in made:  # one mkdir per folder, not per file
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    made.add(dest.parent)
                out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
                try:
                    try:
                        _copy_range(fd, out, offset, part.size)
                    except EOFError:
                        raise _changed(src.spec.path) from None
                finally:
                    os.close(out)
                offset += part.size
            if not _same(os.fstat(fd), src.stat):
                raise _changed(src.spec.path)
        finally:
            os.close(fd)
    _write_file(root / MANIFEST_FILE, manifest_bytes)
    if trust:
        (root / TRUST_DIR).mkdir()
        for i, data in enumerate(trust, 1):
            _write_file(root / TRUST_DIR / f"{i:04d}.dsse.json", data)
    # One flush for every file and folder written (not an fsync each): bundles.durable.
    sync_filesystem(root)


class _Range(io.RawIOBase):
    """``size`` bytes of a descriptor from ``offset``, for ``TarFile.addfile``."""

    def __init__(self, fd: int, offset: int, size: int) -> None:
        self._fd, self._pos, self._end = fd, offset, offset + size

    def readable(self) -> bool:
        return True

    def readinto(self, buf: memoryview | bytearray) -> int:  # type: ignore[override]
        want = min(len(buf), self._end - self._pos)
        if want <= 0:
            return 0
        n = os.preadv(self._fd, [memoryview(buf)[:want]], self._pos)
        self._pos += n
        return n


def _tar_info(name: str, size: int, is_dir: bool, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
    info.size = 0 if is_dir else size
    info.mode = 0o755 if is_dir else 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = mtime
    return info


def _write_tar(
    out: Path, sources: Sequence[_Source], manifest_bytes: bytes, trust: Sequence[bytes]
) -> None:
    mtime = int(os.environ.get("SOURCE_DATE_EPOCH", "0") or 0)
    blobs: dict[str, bytes] = {MANIFEST_FILE: manifest_bytes}
    for i, data in enumerate(trust, 1):
        blobs[f"{TRUST_DIR}/{i:04d}.dsse.json"] = data
    files: dict[str, tuple[_Source, int, int] | bytes] = dict(blobs)
    for src in sources:
        offset = 0
        for part in src.files:
            files[part.path] = (src, offset, part.size)
            offset += part.size
    dirs = {"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)}
    fds: dict[Path, int] = {}
    try:
        with tarfile.open(out, "w", format=tarfile.PAX_FORMAT, encoding="utf-8") as tf:
            for name in sorted(dirs | set(files)):
                item = files.get(name)
                if item is None:
                    tf.addfile(_tar_info(name, 0, True, mtime))
                elif isinstance(item, bytes):
                    tf.addfile(_tar_info(name, len(item), False, mtime), io.BytesIO(item))
                else:
                    src, offset, size = item
                    fd = fds.get(src.spec.path)
                    if fd is None:
                        fd = fds[src.spec.path] = os.open(src.spec.path, os.O_RDONLY | os.O_CLOEXEC)
                    reader = io.BufferedReader(_Range(fd, offset, size), 1 << 20)
                    try:
                        tf.addfile(_tar_info(name, size, False, mtime), reader)
                    except OSError as e:
                        if "unexpected end of data" in str(e):
                            raise _changed(src.spec.path) from e
                        raise
        for src in sources:
            if not _same(os.fstat(fds[src.spec.path]), src.stat):
                raise _changed(src.spec.path)
        fd = os.open(out, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        for fd in fds.values():
            os.close(fd)


def _prepare_out(out: Path, tar: bool) -> None:
    if tar:
        if os.path.lexists(out):
            raise OutputExistsError(f"{out} exists; refusing to overwrite")
    elif os.path.lexists(out):
        if not out.is_dir() or out.is_symlink() or any(out.iterdir()):
            raise OutputExistsError(f"{out} exists and is not an empty directory")
    if not out.parent.is_dir():
        raise InputNotFoundError(f"{out.parent} is not a directory")


def create_bundle(
    out: Path,
    specs: Sequence[ArtifactSpec],
    *,
    stream: str,
    sequence: int,
    keys: Sequence[PrivateKey],
    expires: datetime,
    sites: Sequence[str] = (),
    any_site: bool = False,
    trust_updates: Sequence[bytes] = (),
    tar: bool = False,
    part_size: int | None = None,
    issued_at: datetime | None = None,
    sha256: bool = False,
    check: Callable[[Manifest], None] | None = None,
) -> Manifest:
    """Write a signed bundle to ``out`` and return its manifest."""
    _check_inputs(specs, stream, sites, any_site)
    if not keys:
        raise UsageError("at least one signing key (--key) is needed")
    if part_size is not None and part_size < 1:
        raise UsageError("the part size must be at least 1 byte")
    if not 1 <= sequence <= MAX_INT:
        raise UsageError("the sequence must be an integer from 1 to 2^53-1")
    for data in trust_updates:
        if len(data) > MAX_TRUST_FILE_BYTES:
            raise UsageError(f"a trust update is over {MAX_TRUST_FILE_BYTES} bytes")
        Envelope.from_bytes(data, max_bytes=MAX_TRUST_FILE_BYTES)
    out = Path(out)
    _prepare_out(out, tar)
    issued = (issued_at or utcnow()).replace(microsecond=0)
    if expires <= issued:
        raise UsageError("the bundle would expire before it is issued")

    stats = [_stat_source(s) for s in specs]
    digests = hash_paths([s.path for s in specs])
    sources: list[_Source] = []
    artifacts: list[Artifact] = []
    for spec, st, (digest, size) in zip(specs, stats, digests, strict=True):
        path, parts = _layout(spec, size, part_size)
        sha = None
        if sha256 or spec.sha256:
            with open(spec.path, "rb") as f:
                sha = hashlib.file_digest(f, "sha256").hexdigest()
        if size != st.st_size:
            raise _changed(spec.path)
        sources.append(_Source(spec, st, parts or (Part(path, size),)))
        artifacts.append(
            Artifact(
                name=spec.name,
                version=spec.version,
                release=spec.release if spec.release is not None else sequence,
                size=size,
                media_type=spec.media_type,
                path=path,
                blake3=digest,
                sha256=sha,
                parts=parts,
            )
        )
    manifest = Manifest(
        stream=stream,
        sequence=sequence,
        issued_at=issued,
        expires=expires.replace(microsecond=0),
        artifacts=tuple(artifacts),
        sites=tuple(sites),
        any_site=any_site,
    )
    payload = manifest.to_payload()
    manifest = Manifest.from_payload(payload)  # never sign what the reader would refuse
    _check_layout(manifest)
    if check is not None:  # the caller's last word before signing (model signatures)
        check(manifest)
    envelope = sign_envelope(PAYLOAD_TYPE, payload, keys).to_bytes()
    try:
        _build(out, tar, sources, envelope, trust_updates)
    except OSError as e:
        raise OperationalError(f"cannot write {out}: {e.strerror or e}") from e
    return manifest


def _check_layout(manifest: Manifest) -> None:
    """No file path of the bundle is also a directory of another (``a/b`` vs ``a/b/c``)."""
    files = {p.path for a in manifest.artifacts for p in a.files}
    for path in files:
        parts = path.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in files:
                raise UsageError(f"bundle paths collide: {path!r} lies under another file")


def _build(
    out: Path, tar: bool, sources: Sequence[_Source], envelope: bytes, trust: Sequence[bytes]
) -> None:
    parent = out.parent
    if tar:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            _write_tar(tmp, sources, envelope, trust)
            os.chmod(tmp, 0o644)
            if os.path.lexists(out):
                raise OutputExistsError(f"{out} exists; refusing to overwrite")
            os.rename(tmp, out)
        finally:
            if tmp.exists():
                tmp.unlink()
        _fsync_dir(parent)
        return
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent))
    try:
        _write_directory(staging, sources, envelope, trust)
        os.chmod(staging, 0o755)
        if out.is_dir():
            out.rmdir()  # exists and is empty (checked); a non-empty one makes this fail
        os.rename(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    _fsync_dir(parent)
