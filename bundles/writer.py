"""Writing a bundle (connected side): a directory, or one uncompressed PAX tar.

Sources are hashed with BLAKE3 in parallel, their size and identity are
checked again after the copy (a source that changes while bundling is refused),
and the manifest is parsed back before it is signed, so the writer never signs
what the reader would refuse. The output appears whole or not at all: it is
built beside OUT and renamed into place.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

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
    UnsafePathError,
    UsageError,
)
from bundles.fields import MAX_INT
from bundles.hashing import new_hasher
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
from bundles.writer_copy import Digests, Source, changed, same_file, write_sources

DEFAULT_MEDIA_TYPE = "application/octet-stream"
_MAX_LEAF = 255 - len(".part0000")  # NAME_MAX of the usual file systems
_MEDIA_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*$")


@dataclass
class ArtifactSpec:
    name: str
    version: str
    path: Path
    media_type: str = DEFAULT_MEDIA_TYPE
    release: int | None = None
    sha256: bool = False  # list its SHA-256 too (a sha256 model signature covers it)


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
    # One file per artifact straight in its name's folder: ``artifacts/NAME@VERSION_BASE``
    # (no folder per artifact and version: at 20,000 artifacts their mkdirs cost more
    # than writing the files). Names have no ``@``, versions no ``_`` or ``/``: no two
    # artifacts share a path and no file path is another's folder. A last segment that
    # would be too long for a file system (with its ``.partNNNN``) keeps the folder
    # layout ``artifacts/NAME/VERSION/BASE``.
    leaf = f"{spec.name.rpartition('/')[2]}@{spec.version}_{base}"
    if len(leaf.encode()) <= _MAX_LEAF:
        path = f"{ARTIFACT_PREFIX}{spec.name}@{spec.version}_{base}"
    else:
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
    root: Path, sources: Sequence[Source], trust: Sequence[bytes], sign: Signer
) -> Manifest:
    """Every source in one pass (``bundles.writer_copy``), then the manifest ``sign``
    makes of their digests, the trust updates, and one ``syncfs`` for all of it."""
    manifest, envelope = sign(write_sources(root, sources))
    _write_file(root / MANIFEST_FILE, envelope)
    if trust:
        (root / TRUST_DIR).mkdir()
        for i, data in enumerate(trust, 1):
            _write_file(root / TRUST_DIR / f"{i:04d}.dsse.json", data)
    # One flush for every file and folder written (not an fsync each): bundles.durable.
    # It comes before the rename that makes the bundle appear, so OUT never holds a
    # manifest whose files are not on disk.
    sync_filesystem(root)
    return manifest


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


class _HashingRange(_Range):
    """A range of a source's descriptor that feeds what is read to the source's hashers."""

    def __init__(self, fd: int, offset: int, size: int, hashers: list[Any]) -> None:
        super().__init__(fd, offset, size)
        self._hashers = hashers

    def readinto(self, buf: memoryview | bytearray) -> int:  # type: ignore[override]
        n = super().readinto(buf)
        if n:
            view = memoryview(buf)[:n]
            for h in self._hashers:
                h.update(view)
        return n


@dataclass
class _Streamed:
    """One source while the tar is written: its descriptor, hashers and progress."""

    fd: int
    hashers: list[Any]
    done: int = 0  # bytes written so far (its parts come in order of offset)
    parts_left: int = 0


def _write_tar(
    out: Path, sources: Sequence[Source], sign: Signer, trust: Sequence[bytes]
) -> Manifest:
    """The tar in one pass over the sources: every artifact entry (they all sort before
    the manifest) is streamed from its source's one descriptor while it is hashed, so
    the digests signed are those of the very bytes written; then the manifest is signed
    and appended, then the trust updates. Entries in sorted order, as before."""
    mtime = int(os.environ.get("SOURCE_DATE_EPOCH", "0") or 0)
    files: dict[str, tuple[int, int, int]] = {}  # path -> (source index, offset, size)
    for k, src in enumerate(sources):
        offset = 0
        for part in src.files:
            files[part.path] = (k, offset, part.size)
            offset += part.size
    blob_names = [
        MANIFEST_FILE,
        *(f"{TRUST_DIR}/{i:04d}.dsse.json" for i in range(1, len(trust) + 1)),
    ]
    every = set(files) | set(blob_names)
    dirs = {"/".join(p.split("/")[:i]) for p in every for i in range(1, p.count("/") + 1)}
    names = sorted(dirs | every)
    cut = names.index(MANIFEST_FILE)
    if any(n in files for n in names[cut:]):  # the layout puts artifacts under artifacts/
        raise AssertionError("an artifact entry sorts after the manifest")
    streams: dict[int, _Streamed] = {}  # sources being read: one descriptor each
    digests: dict[int, Digests] = {}
    try:
        with tarfile.open(out, "w", format=tarfile.PAX_FORMAT, encoding="utf-8") as tf:
            for name in names[:cut]:
                item = files.get(name)
                if item is None:
                    tf.addfile(_tar_info(name, 0, True, mtime))
                    continue
                k, offset, size = item
                done = _stream_part(tf, name, sources[k], k, offset, size, streams, mtime)
                if done is not None:
                    digests[k] = done
            manifest, envelope = sign([digests[k] for k in range(len(sources))])
            blobs = dict(zip(blob_names, [envelope, *trust], strict=True))
            for name in names[cut:]:
                data = blobs.get(name)
                if data is None:
                    tf.addfile(_tar_info(name, 0, True, mtime))
                else:
                    tf.addfile(_tar_info(name, len(data), False, mtime), io.BytesIO(data))
        fd = os.open(out, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return manifest
    finally:
        for st in streams.values():
            os.close(st.fd)


def _stream_part(
    tf: tarfile.TarFile,
    name: str,
    src: Source,
    k: int,
    offset: int,
    size: int,
    streams: dict[int, _Streamed],
    mtime: int,
) -> Digests | None:
    """Write one part of source ``k`` into the tar, hashing it on the way; after its last
    part, its digests (and its descriptor closed: one open source at a time)."""
    st = streams.get(k)
    if st is None:
        # non-blocking: a FIFO put in its place is opened at once, and refused by fstat
        fd = os.open(src.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        hashers: list[Any] = [new_hasher(src.stat.st_size)]
        if src.sha256:
            hashers.append(hashlib.sha256())
        st = streams[k] = _Streamed(fd, hashers, parts_left=len(src.files))
        if not same_file(os.fstat(fd), src.stat):
            raise changed(src.path)
    if offset != st.done:
        raise AssertionError(f"{name}: parts out of order")
    reader = io.BufferedReader(_HashingRange(st.fd, offset, size, st.hashers), 1 << 20)
    try:
        tf.addfile(_tar_info(name, size, False, mtime), reader)
    except OSError as e:
        if "unexpected end of data" in str(e):
            raise changed(src.path) from e
        raise
    st.done += size
    st.parts_left -= 1
    if st.parts_left:
        return None
    del streams[k]
    try:
        if st.done != src.stat.st_size or not same_file(os.fstat(st.fd), src.stat):
            raise changed(src.path)  # grew, or was written to, while it was read
    finally:
        os.close(st.fd)
    sha = st.hashers[1].hexdigest() if src.sha256 else None
    return Digests(st.hashers[0].hexdigest(), sha, st.done)


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
    sources: list[Source] = []
    paths: list[str] = []
    for spec, st in zip(specs, stats, strict=True):
        path, parts = _layout(spec, st.st_size, part_size)
        paths.append(path)
        files = parts or (Part(path, st.st_size),)
        sources.append(Source(spec.path, st, files, sha256 or spec.sha256))
    _check_layout(p.path for s in sources for p in s.files)  # before anything is written

    def sign(digests: Sequence[Digests]) -> tuple[Manifest, bytes]:
        manifest = Manifest(
            stream=stream,
            sequence=sequence,
            issued_at=issued,
            expires=expires.replace(microsecond=0),
            artifacts=_artifacts(specs, sources, paths, digests, sequence),
            sites=tuple(sites),
            any_site=any_site,
        )
        payload = manifest.to_payload()
        manifest = Manifest.from_payload(payload)  # never sign what the reader would refuse
        if check is not None:  # the caller's last word before signing (model signatures)
            check(manifest)
        return manifest, sign_envelope(PAYLOAD_TYPE, payload, keys).to_bytes()

    try:
        return _build(out, tar, sources, sign, trust_updates)
    except OSError as e:
        raise OperationalError(f"cannot write {out}: {e.strerror or e}") from e


def _artifacts(
    specs: Sequence[ArtifactSpec],
    sources: Sequence[Source],
    paths: Sequence[str],
    digests: Sequence[Digests],
    sequence: int,
) -> tuple[Artifact, ...]:
    artifacts = []
    for spec, src, path, d in zip(specs, sources, paths, digests, strict=True):
        if d.size != src.stat.st_size:
            raise changed(spec.path)
        artifacts.append(
            Artifact(
                name=spec.name,
                version=spec.version,
                release=spec.release if spec.release is not None else sequence,
                size=d.size,
                media_type=spec.media_type,
                path=path,
                blake3=d.blake3,
                sha256=d.sha256,
                parts=src.files if len(src.files) > 1 else (),
            )
        )
    return tuple(artifacts)


def _check_layout(paths: Iterable[str]) -> None:
    """No file path of the bundle is also a directory of another (``a/b`` vs ``a/b/c``)."""
    listed = list(paths)
    files = set(listed)
    if len(files) != len(listed):
        raise UsageError("bundle paths collide: two artifacts would have the same path")
    for path in files:
        parts = path.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in files:
                raise UsageError(f"bundle paths collide: {path!r} lies under another file")


Signer = Callable[[Sequence[Digests]], tuple[Manifest, bytes]]


def _build(
    out: Path, tar: bool, sources: Sequence[Source], sign: Signer, trust: Sequence[bytes]
) -> Manifest:
    parent = out.parent
    if tar:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            manifest = _write_tar(tmp, sources, sign, trust)
            os.chmod(tmp, 0o644)
            if os.path.lexists(out):
                raise OutputExistsError(f"{out} exists; refusing to overwrite")
            os.rename(tmp, out)
        finally:
            if tmp.exists():
                tmp.unlink()
        _fsync_dir(parent)
        return manifest
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent))
    try:
        manifest = _write_directory(staging, sources, trust, sign)
        os.chmod(staging, 0o755)
        if out.is_dir():
            out.rmdir()  # exists and is empty (checked); a non-empty one makes this fail
        os.rename(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    _fsync_dir(parent)
    return manifest
