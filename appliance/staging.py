"""One pass per artifact: copy from media to a staging file, hash the staging file.

The kernel copies the media bytes to the staging file (``os.copy_file_range``,
which releases the GIL) in chunks, while a second thread chases the copy and
hashes each finished chunk *of the staging file* (ours, 0600, in the home; read
with ``pread`` into a reused buffer). So the media is read exactly once, the two
cores overlap the copy and the hash, and the store holds exactly the bytes that
were hashed. When the kernel cannot copy between the two files (media on
another file system type such as FAT, or an old kernel), the copier falls back
to ``ArtifactReader.readinto`` and ``os.write``; the hashing is the same.

Length checks stay the reader's: ``segments()`` checks every part's size first,
a part that ends early (it shrank while read) raises ``MediaChangedError``, and the sizes are
checked again after the copy (a part that grew meanwhile is endless data:
``ArtifactTooLongError``). ``ArtifactReader.bytes_read`` counts the copied bytes.
A dry run (no staging folder) reads and hashes without writing.

Every digest the manifest signs is computed in that same pass and checked
(``bundles.hashing.ArtifactDigests``: BLAKE3, and SHA-256 when listed), the
verifier ``bundle inspect --verify`` uses. Small artifacts (up to ``SMALL``
bytes, one part) skip the second thread: one read into a buffer, hash, one
write. ``durable=False`` leaves the fsync to the caller (an import syncs the
whole batch once with ``appliance.store.sync_home``).
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable
from typing import cast

from appliance import safefs
from appliance.errors import CancelledError, IOFailedError
from appliance.store import Staged, io_error
from bundles.errors import MediaChangedError
from bundles.fdio import write_all
from bundles.hashing import ArtifactDigests
from bundles.manifest import Artifact
from bundles.media import media_error
from bundles.reader import ArtifactReader, Bundle

CHUNK = 8 << 20  # one copy_file_range call; the hashing thread follows chunk by chunk
HASH_BUF = 1 << 20  # the hashing thread's buffer (stays in the core's L2 cache)
Progress = Callable[[str, int, int], None]  # artifact name, bytes done, artifact size
# copy_file_range cannot copy between these two files: fall back to read and write.
_NO_KERNEL_COPY = {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF}
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
EARLY_WRITEBACK = True
SMALL = 1 << 20  # at most this size (one part): read, hash and write in this thread


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """glibc's ``sync_file_range`` (not in ``os``), or None where there is none."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return cast(Callable[[int, int, int, int], int], fn)


_SYNC_FILE_RANGE_WRITE = 2
_sync_file_range = _load_sync_file_range()


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing a copied chunk to disk now, so the final fsync has little left to wait
    for (the disk works while the next chunks are copied). Advisory: errors are left to
    the fsync, which reports them."""
    if _sync_file_range is not None and EARLY_WRITEBACK:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


class _Chaser:
    """A thread hashing the staging file from offset 0 up to what the copier has written."""

    def __init__(
        self,
        fd: int,
        artifact: Artifact,
        progress: Progress | None,
        cancel: threading.Event | None,
    ) -> None:
        self.thread = threading.Thread(target=self.run, name=f"hash {artifact.name}", daemon=True)
        self.fd = fd
        self.artifact = artifact
        self.progress = progress
        self.cancel = cancel
        # One core hashes while the other copies: a single-threaded hasher.
        self.digests = ArtifactDigests(artifact, threads=False)
        self.hashed = 0
        self.error: BaseException | None = None
        self._written = 0
        self._finished = False
        self._stop = False
        self._cond = threading.Condition()

    def advance(self, written: int) -> None:
        with self._cond:
            self._written = written
            self._cond.notify()

    def finish(self) -> None:
        """No more bytes will come; ``join`` then returns once all are hashed."""
        with self._cond:
            self._finished = True
            self._cond.notify()

    def abort(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()

    def start(self) -> None:
        self.thread.start()

    def join(self) -> None:
        self.thread.join()

    def run(self) -> None:
        try:
            self._run()
        except BaseException as e:  # noqa: BLE001 - handed to the copier, which re-raises
            self.error = e

    def _run(self) -> None:
        buf = bytearray(HASH_BUF)
        view = memoryview(buf)
        while True:
            with self._cond:
                while self._written == self.hashed and not self._finished and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                end = self._written
                if end == self.hashed and self._finished:
                    return
            while self.hashed < end:
                want = min(len(view), end - self.hashed)
                try:
                    n = os.preadv(self.fd, [view[:want]], self.hashed)
                except OSError as e:  # the home's disk failed under the staging file
                    raise io_error(e, f"reading back {self.artifact.ref} from staging") from e
                if n <= 0:
                    raise IOFailedError(
                        f"{self.artifact.ref}: the staging file ended at {self.hashed} bytes",
                    )
                self.digests.update(view[:n])
                self.hashed += n
            if self.progress is not None:
                self.progress(self.artifact.name, self.hashed, self.artifact.size)
            _check_cancel(self.cancel)


def _check_cancel(cancel: threading.Event | None, chaser: _Chaser | None = None) -> None:
    if cancel is not None and cancel.is_set():
        raise CancelledError("import cancelled; nothing was changed")
    if chaser is not None and chaser.error is not None:
        raise chaser.error  # the hashing thread failed: stop copying


def _kernel_copy(
    reader: ArtifactReader,
    out: int,
    chaser: _Chaser,
    cancel: threading.Event | None,
) -> bool:
    """Copy every part with ``copy_file_range``; False if the kernel cannot (nothing copied)."""
    artifact = reader.artifact
    written = 0
    for (src, offset, length), part in zip(reader.segments(), artifact.files, strict=True):
        done = 0
        while done < length:
            _check_cancel(cancel, chaser)
            try:
                n = os.copy_file_range(src, out, min(CHUNK, length - done), offset + done, written)
            except OSError as e:
                if written == 0 and e.errno in _NO_KERNEL_COPY:
                    return False
                if e.errno in _DISK_FULL:
                    raise io_error(e, f"writing {artifact.ref} to staging") from e
                raise media_error(f"{artifact.ref}: {part.path}", e) from e
            if n == 0:  # its size was right when opened: it shrank while read
                raise MediaChangedError(
                    f"{artifact.ref}: {part.path!r} shrank while read: it ended after {done} "
                    f"bytes, signed {part.size}"
                )
            _start_writeback(out, written, n)
            done += n
            written += n
            reader.bytes_read += n
            chaser.advance(written)
    reader.check_sizes()  # endless data: did a part grow while it was copied?
    return True


def _buffered_copy(
    reader: ArtifactReader,
    out: int,
    chaser: _Chaser,
    cancel: threading.Event | None,
) -> None:
    """The fallback: the reader's bounded ``readinto`` and ``os.write``."""
    buf = bytearray(min(CHUNK, max(reader.size, 1)))
    view = memoryview(buf)
    written = 0
    while True:
        _check_cancel(cancel, chaser)
        n = reader.readinto(view)
        if n == 0:
            break
        try:
            write_all(out, view[:n])
        except OSError as e:
            raise io_error(e, f"writing {reader.artifact.ref} to staging") from e
        _start_writeback(out, written, n)
        written += n
        chaser.advance(written)


def _hash_only(
    reader: ArtifactReader,
    artifact: Artifact,
    progress: Progress | None,
    cancel: threading.Event | None,
) -> ArtifactDigests:
    """Dry run: read the media once and hash, writing nothing."""
    digests = ArtifactDigests(artifact)
    buf = bytearray(min(CHUNK, max(artifact.size, 1)))
    view = memoryview(buf)
    done = 0
    while True:
        _check_cancel(cancel)
        n = reader.readinto(view)
        if n == 0:
            break
        digests.update(view[:n])
        done += n
        if progress is not None:
            progress(artifact.name, done, artifact.size)
    return digests


def _small_copy(
    reader: ArtifactReader,
    artifact: Artifact,
    out: int,
    progress: Progress | None,
    cancel: threading.Event | None,
) -> ArtifactDigests:
    """A small artifact: one read from media, hashed from that buffer, one write.

    The bytes hashed are the bytes written (the same buffer), so the store still holds
    exactly the hashed bytes; the reader's bounds and size checks apply as for big ones.
    """
    _check_cancel(cancel)
    digests = ArtifactDigests(artifact, threads=False)
    buf = bytearray(artifact.size + 1)  # one byte more: a part that grew is noticed
    view = memoryview(buf)
    done = 0
    # ``readinto`` returns 0 only at the signed end, after checking the part's size on
    # media there (``ArtifactReader.readinto``: endless data), and never fills ``view``
    # (it reads at most the signed size): no second ``check_sizes`` is needed.
    while n := reader.readinto(view[done:]):
        done += n
    data = view[:done]
    digests.update(data)
    try:
        write_all(out, data)
    except OSError as e:
        raise io_error(e, f"writing {artifact.ref} to staging") from e
    if progress is not None:
        progress(artifact.name, done, artifact.size)
    if done != artifact.size:
        raise MediaChangedError(f"{artifact.ref}: read {done} bytes, signed {artifact.size}")
    return digests


def _copy_and_hash(
    reader: ArtifactReader,
    artifact: Artifact,
    out: int,
    progress: Progress | None,
    cancel: threading.Event | None,
) -> ArtifactDigests:
    if artifact.size <= SMALL and len(artifact.files) == 1:
        return _small_copy(reader, artifact, out, progress, cancel)
    chaser = _Chaser(out, artifact, progress, cancel)
    chaser.start()
    try:
        if not _kernel_copy(reader, out, chaser, cancel):
            _buffered_copy(reader, out, chaser, cancel)
    except BaseException:
        chaser.abort()
        chaser.join()
        raise
    chaser.finish()
    chaser.join()
    _check_cancel(cancel, chaser)  # a cancel while the last chunk was hashed still counts
    size = os.fstat(out).st_size
    if chaser.hashed != artifact.size or size != artifact.size:
        raise IOFailedError(
            f"{artifact.ref}: staged {size} bytes and hashed {chaser.hashed}, "
            f"signed {artifact.size}",
        )
    return chaser.digests


def stage_artifact(
    bundle: Bundle,
    artifact: Artifact,
    staging: int | None,
    *,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    durable: bool = True,
) -> Staged | None:
    """Hash one artifact from media (and write it into the folder ``staging``, a
    descriptor, unless None: dry run).

    The staging file is created in that folder by descriptor under an unpredictable
    name with ``O_CREAT | O_EXCL | O_NOFOLLOW`` (``safefs.create_temp_at``), so
    neither a link at ``staging`` swapped in since it was opened nor one at the name
    is ever written through. Returns its name and inode (fsynced unless ``durable``
    is False) for ``store.promote``. Raises ``DigestMismatchError`` (any signed
    digest) and the reader's length errors; removes its staging file on any failure.
    """
    name: str | None = None
    fd = -1
    if staging is not None:
        try:
            fd, name = safefs.create_temp_at(staging, f"{artifact.blake3}.", ".part", 0o600)
        except OSError as e:
            raise io_error(e, f"creating a staging file for {artifact.ref}") from e
    try:
        with bundle.open_artifact(artifact) as reader:
            if fd >= 0:
                digests = _copy_and_hash(reader, artifact, fd, progress, cancel)
            else:
                digests = _hash_only(reader, artifact, progress, cancel)
        digests.check()
        if fd >= 0 and durable:
            try:
                os.fsync(fd)
            except OSError as e:
                raise io_error(e, f"syncing {artifact.ref} to staging") from e
        staged = None if name is None else Staged.of_fd(name, fd)
    except BaseException:
        if fd >= 0:
            os.close(fd)
            fd = -1
        if name is not None and staging is not None:
            try:
                os.unlink(name, dir_fd=staging)
            except FileNotFoundError:
                pass
        raise
    finally:
        if fd >= 0:
            os.close(fd)
    return staged
