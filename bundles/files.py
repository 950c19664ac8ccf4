"""Small input files given on the command line, and output files that are never overwritten."""

from __future__ import annotations

import os
from pathlib import Path

from bundles.errors import OperationalError


def read_input_file(
    path: Path, limit: int, what: str, *, missing_code: str = "file_not_found"
) -> bytes:
    """Up to ``limit + 1`` bytes of ``path`` (callers refuse longer files in their own terms).

    Absent: ``OperationalError`` with ``missing_code``; unreadable: ``io_error`` (both exit 3).
    """
    try:
        with open(path, "rb") as f:
            return f.read(limit + 1)
    except FileNotFoundError as e:
        raise OperationalError(f"{what} {path} not found", code=missing_code) from e
    except OSError as e:
        raise OperationalError(f"cannot read {what} {path}: {e.strerror}", code="io_error") from e


def write_new_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Create ``path`` with ``data`` (fsynced); an existing file is never overwritten."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    except FileExistsError as e:
        raise OperationalError(f"{path} exists; refusing to overwrite", code="output_exists") from e
    except OSError as e:
        raise OperationalError(f"cannot write {path}: {e.strerror}", code="io_error") from e
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except OSError as e:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise OperationalError(f"cannot write {path}: {e.strerror}", code="io_error") from e
    os.close(fd)
