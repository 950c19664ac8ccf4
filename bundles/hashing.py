"""BLAKE3 hashing: large files read and hashed at once on all cores, small files spread
over processes.

``hash_fd`` reads the open descriptor it is given with ``pread`` (from offset 0,
to its end) into reused buffers, so the bytes hashed are those of that
descriptor (the loader hands over the same one). Reading beats mapping here:
no page faults, a peak memory of a few MiB instead of the file's size in mapped
pages, and a file that shrinks while it is hashed gives a short read, never a
SIGBUS. For a file larger than one chunk, this thread reads chunk k+1 while a
helper thread hashes chunk k with all cores (``max_threads=AUTO``; both calls
release the GIL). A/B on 2 GiB here, idle machine: 0.21 s, against 0.29 s for
``b3sum``, for a mapping hashed with AUTO, and 0.32 s for read-then-hash.

``hash_mapped`` hashes through a read-only mapping instead: no copy into user
buffers at all (what ``b3sum`` does), about a quarter less CPU than ``hash_fd`` on
2 GiB, which counts on a machine whose cores the hash already fills. A mapped file
that shrinks while it is hashed raises SIGBUS, which ends the process: so it is only
for descriptors whose file cannot shrink (an inode with the immutable flag), and only
where ending the process is failing closed (the one-shot CLI ``load``/``exec``, which
has written nothing and run nothing before the hash is compared). The library and
the loader service keep ``hash_fd``.

``hash_isolated`` (what ``hash_path`` and ``appliance verify`` use for a large file) gets
``hash_mapped``'s speed without its SIGBUS: the mapping is hashed in a forked child, and
whatever goes wrong there (the file shrank, a read error) ends the child; ``hash_fd``
then hashes the file here and gives its own answer.

``hash_paths`` hashes many small files in two or more processes (the GIL keeps
threads from helping), each reading into its own buffer; the processes are forked, so
only when no other thread runs (``bundles.forks``), else it hashes in this process.

Imports are kept to what hashing one descriptor needs (``hashlib``, the process
pool and the manifest types load on first use): the CLI's ``load`` starts its hash
before the rest of the product is imported.
"""

from __future__ import annotations

import mmap
import os
import queue
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import blake3

from bundles.errors import DigestMismatchError
from bundles.fdio import read_all
from bundles.forks import fork_is_safe, fork_with_pipe

if TYPE_CHECKING:
    import hashlib

    from bundles.manifest import Artifact

# At and above this size new_hasher() hashes with all cores (one update of a big buffer).
MULTITHREAD_MIN = 1 << 20
EMPTY_DIGEST = blake3.blake3(b"").hexdigest()
CHUNK = 4 << 20  # read size: split over the cores by one multithreaded update
_BUFFERS = 3  # one being read, one being hashed, one spare
_local = threading.local()


def new_hasher(size_hint: int = 0) -> blake3.blake3:
    """A BLAKE3 hasher; multithreaded for a hint of ``MULTITHREAD_MIN`` bytes or more."""
    if size_hint >= MULTITHREAD_MIN:
        return blake3.blake3(max_threads=blake3.blake3.AUTO)
    return blake3.blake3()


def _buffer() -> memoryview:
    """This thread's reused read buffer."""
    view: memoryview | None = getattr(_local, "view", None)
    if view is None:
        view = memoryview(bytearray(CHUNK))
        _local.view = view
    return view


def _hash_pipelined(fd: int, hasher: blake3.blake3, first: memoryview, offset: int) -> int:
    """Hash ``first`` and the rest of ``fd`` from ``offset``: read k+1 while k is hashed."""
    free: queue.SimpleQueue[memoryview] = queue.SimpleQueue()
    full: queue.SimpleQueue[memoryview | None] = queue.SimpleQueue()
    for _ in range(_BUFFERS - 1):
        free.put(memoryview(bytearray(CHUNK)))
    failed: list[BaseException] = []

    def hash_chunks() -> None:
        try:
            while (chunk := full.get()) is not None:
                hasher.update(chunk)
                free.put(chunk)  # a short chunk is the last one: reusing it is harmless
        except BaseException as e:  # noqa: BLE001 - re-raised by the reading thread
            failed.append(e)
        finally:
            free.put(memoryview(b""))  # never leave the reader waiting

    helper = threading.Thread(target=hash_chunks, name="blake3", daemon=True)
    helper.start()
    try:
        full.put(first)
        while True:
            buf = free.get()
            if failed or not buf:
                break
            n = os.preadv(fd, [buf], offset)
            if n == 0:
                break
            offset += n
            full.put(buf if n == len(buf) else buf[:n])
    finally:
        full.put(None)
        helper.join()
    if failed:
        raise failed[0]
    return offset


def hash_fd(fd: int) -> tuple[str, int]:
    """BLAKE3 hex digest and size of everything readable from ``fd`` (from offset 0).

    Reads with ``pread``: the descriptor's file offset does not move.
    """
    view = _buffer()
    n = os.preadv(fd, [view], 0)
    if n < len(view):  # one chunk (or an empty file): one core, no threads
        hasher = blake3.blake3(view[:n])
        size = n
        while n:  # a short read is the end for regular files; make sure of it
            n = os.preadv(fd, [view], size)
            hasher.update(view[:n])
            size += n
        return hasher.hexdigest(), size
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    size = _hash_pipelined(fd, hasher, view, n)
    return hasher.hexdigest(), size


MAP_CHUNK = 64 << 20  # bytes per multithreaded update of the mapping (a place to stop)


def hash_mapped(
    fd: int, stop: Callable[[], bool] | None = None, *, max_threads: int = blake3.blake3.AUTO
) -> tuple[str, int] | None:
    """BLAKE3 hex digest and size of the whole file open as ``fd``, hashed through a
    read-only shared mapping on all cores; None when ``stop()`` turned true between two
    ``MAP_CHUNK`` updates (the caller gave up on this hash).

    Only for a file that cannot shrink while it is mapped (see the module's note on
    SIGBUS): the caller checks that first, on this descriptor. ``max_threads``: as
    ``blake3.blake3`` takes it (``AUTO``: the process's global thread pool; a number:
    a pool of its own, made for this hash).
    """
    size = os.fstat(fd).st_size
    if size < MULTITHREAD_MIN:  # small: no mapping, no threads (and an empty file maps not)
        return hash_fd(fd)
    with mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ) as mapping:
        view = memoryview(mapping)
        try:
            hasher = blake3.blake3(max_threads=max_threads)
            for offset in range(0, size, MAP_CHUNK):
                if stop is not None and stop():
                    return None
                hasher.update(view[offset : offset + MAP_CHUNK])
        finally:
            view.release()
    return hasher.hexdigest(), size


ISOLATED_MIN = 64 << 20  # from this size ``hash_isolated`` maps the file in a child
counters = {"isolated_hashes": 0, "isolated_fallbacks": 0}  # pinned by tests


def hash_isolated(fd: int) -> tuple[str, int]:
    """What ``hash_fd(fd)`` gives, hashed through a mapping (``hash_mapped``: no copy
    into user buffers, ``b3sum``'s speed where reading into buffers is not) in a forked
    child, so that a file that shrinks while mapped (SIGBUS) ends that child, never this
    process.

    The mapping covers the size ``fstat`` gave before; the answer counts only when the
    child reported a digest and the file's size, modification and change times are
    still the ones it started from. Otherwise (the child died or answered nothing, the
    file changed, or no child may be forked: another thread runs) ``hash_fd`` hashes
    it here and its answer is the one given. Small files are hashed by ``hash_fd``.
    """
    before = os.fstat(fd)
    if before.st_size < ISOLATED_MIN or not fork_is_safe():
        return hash_fd(fd)

    def child(w: int) -> None:
        # A pool of the child's own: the global one a parent made has no threads here
        # (a fork copies only the calling thread), and a hash handed to it would wait
        # for them for ever.
        found = hash_mapped(fd, max_threads=max(os.cpu_count() or 1, 2))
        answer = b"" if found is None else f"{found[0]} {found[1]}".encode()
        while answer:
            answer = answer[os.write(w, answer) :]

    started = fork_with_pipe(child)
    if started is None:
        return hash_fd(fd)
    pid, r = started
    try:
        answer = read_all(r)
    finally:
        os.close(r)
        _, status = os.waitpid(pid, 0)
    counters["isolated_hashes"] += 1
    digest, _, size = answer.decode("ascii", "replace").partition(" ")
    after = os.fstat(fd)
    same = (after.st_size, after.st_mtime_ns, after.st_ctime_ns) == (
        before.st_size,
        before.st_mtime_ns,
        before.st_ctime_ns,
    )
    if (
        os.waitstatus_to_exitcode(status) == 0
        and same
        and size == str(before.st_size)
        and len(digest) == 64
        and all(c in "0123456789abcdef" for c in digest)
    ):
        return digest, before.st_size
    counters["isolated_fallbacks"] += 1
    return hash_fd(fd)


def hash_path(path: str | os.PathLike[str]) -> tuple[str, int]:
    """BLAKE3 hex digest and size of the file at ``path`` (``hash_isolated``)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return hash_isolated(fd)
    finally:
        os.close(fd)


def _hash_many(paths: Sequence[str]) -> list[tuple[str, int]]:
    return [hash_path(p) for p in paths]


def hash_paths(
    paths: Sequence[str | os.PathLike[str]], workers: int | None = None
) -> list[tuple[str, int]]:
    """Hash many files; small files are spread over processes (the GIL limits threads)."""
    names = [os.fspath(p) for p in paths]
    workers = workers if workers is not None else min(os.cpu_count() or 1, 4)
    if workers <= 1 or len(names) < 256:
        return _hash_many(names)
    if not fork_is_safe():  # the pool forks: beside another thread, hash here instead
        return _hash_many(names)
    from concurrent.futures import ProcessPoolExecutor

    chunk = max(64, len(names) // (workers * 8))
    batches = [names[i : i + chunk] for i in range(0, len(names), chunk)]
    try:
        pool = ProcessPoolExecutor(max_workers=workers)
    except OSError:  # no /dev/shm (minimal containers, chroots): hash in this process
        return _hash_many(names)
    with pool:
        results: list[tuple[str, int]] = []
        for part in pool.map(_hash_many, batches):
            results.extend(part)
    return results


class ArtifactDigests:
    """The one digest verifier: every digest the manifest signs for one artifact.

    BLAKE3 always, SHA-256 too when the manifest lists it; both are fed the same
    bytes in the same single pass (``update``), and ``check`` compares each with its
    signed value. Import staging (``appliance.staging``) and ``bundle inspect
    --verify`` (``bundles.reader.verify_artifacts``) both use it, so an artifact
    that ``inspect`` refuses is refused by import too. ``threads`` hashes BLAKE3 on
    all cores for large artifacts (the caller's choice: import staging already
    overlaps copy and hash on two cores).
    """

    def __init__(self, artifact: Artifact, *, threads: bool = True) -> None:
        import hashlib

        self.artifact = artifact
        self.blake3 = new_hasher(artifact.size if threads else 0)
        self.sha256: hashlib._Hash | None = (
            hashlib.sha256() if artifact.sha256 is not None else None
        )

    def update(self, data: memoryview | bytes | bytearray) -> None:
        self.blake3.update(data)
        if self.sha256 is not None:
            self.sha256.update(data)

    def check(self) -> None:
        """Raise ``DigestMismatchError`` unless every signed digest matches."""
        a = self.artifact
        got = str(self.blake3.hexdigest())
        if got != a.blake3:
            raise DigestMismatchError(
                f"{a.ref}: BLAKE3 {got[:16]}... does not match the signed {a.blake3[:16]}..."
            )
        if self.sha256 is not None and a.sha256 is not None:
            got = self.sha256.hexdigest()
            if got != a.sha256:
                raise DigestMismatchError(
                    f"{a.ref}: SHA-256 {got[:16]}... does not match the signed {a.sha256[:16]}..."
                )
