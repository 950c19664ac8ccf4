"""Small input files given on the command line, and output files that are never overwritten."""

from __future__ import annotations

import os
from pathlib import Path

from bundles.errors import InputNotFoundError, IOFailedError, OutputExistsError


def read_input_file(
    path: Path, limit: int, what: str, *, missing: type[InputNotFoundError] = InputNotFoundError
) -> bytes:
    """Up to ``limit + 1`` bytes of ``path`` (callers refuse longer files in their own terms).

    Absent: ``missing`` (``file_not_found`` unless a subclass is given); unreadable:
    ``io_error`` (both exit 3).
    """
    try:
        with open(path, "rb") as f:
            return f.read(limit + 1)
    except FileNotFoundError as e:
        raise missing(f"{what} {path} not found") from e
    except OSError as e:
        raise IOFailedError(f"cannot read {what} {path}: {e.strerror}") from e


def write_new_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Create ``path`` with ``data`` (fsynced); an existing file is never overwritten."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    except FileExistsError as e:
        raise OutputExistsError(f"{path} exists; refusing to overwrite") from e
    except OSError as e:
        raise IOFailedError(f"cannot write {path}: {e.strerror}") from e
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except OSError as e:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise IOFailedError(f"cannot write {path}: {e.strerror}") from e
    os.close(fd)
