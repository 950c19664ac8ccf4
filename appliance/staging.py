"""One pass per artifact: read from media, BLAKE3, write to a staging file.

The media is read once, through the bounded ``ArtifactReader``; the bytes that
are hashed are the bytes that are written, so the store holds exactly what was
verified. Staging files live in the home's filesystem so promotion is a rename.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Callable
from pathlib import Path

from appliance.errors import OperationalError
from appliance.store import io_error
from bundles.errors import DigestMismatchError
from bundles.hashing import new_hasher
from bundles.manifest import Artifact
from bundles.reader import Bundle

CHUNK = 4 << 20
Progress = Callable[[str, int, int], None]  # artifact name, bytes done, artifact size


class CancelledError(OperationalError):
    code = "cancelled"


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        n = os.write(fd, view)
        view = view[n:]


def stage_artifact(
    bundle: Bundle,
    artifact: Artifact,
    staging: Path | None,
    *,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> Path | None:
    """Hash one artifact from media (and write it to ``staging`` unless None: dry run).

    Returns the fsynced staging file. Raises ``DigestMismatchError`` and the
    reader's length errors; removes its staging file on any failure.
    """
    target: Path | None = None
    fd = -1
    if staging is not None:
        target = staging / f"{artifact.blake3}.{secrets.token_hex(4)}.part"
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise io_error(e, f"creating a staging file for {artifact.ref}") from e
    hasher = new_hasher(artifact.size)
    buf = bytearray(min(CHUNK, max(artifact.size, 1)))
    view = memoryview(buf)
    done = 0
    try:
        with bundle.open_artifact(artifact) as reader:
            while True:
                if cancel is not None and cancel.is_set():
                    raise CancelledError("import cancelled; nothing was changed")
                n = reader.readinto(view)
                if n == 0:
                    break
                chunk = view[:n]
                hasher.update(chunk)
                if fd >= 0:
                    try:
                        _write_all(fd, chunk)
                    except OSError as e:
                        raise io_error(e, f"writing {artifact.ref} to staging") from e
                done += n
                if progress is not None:
                    progress(artifact.name, done, artifact.size)
        digest = hasher.hexdigest()
        if digest != artifact.blake3:
            raise DigestMismatchError(
                f"{artifact.ref}: BLAKE3 {digest[:16]}... does not match the signed "
                f"{artifact.blake3[:16]}..."
            )
        if fd >= 0:
            try:
                os.fsync(fd)
            except OSError as e:
                raise io_error(e, f"syncing {artifact.ref} to staging") from e
    except BaseException:
        if fd >= 0:
            os.close(fd)
            fd = -1
        if target is not None:
            target.unlink(missing_ok=True)
        raise
    finally:
        if fd >= 0:
            os.close(fd)
    return target
