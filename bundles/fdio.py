"""Writing a whole buffer to a descriptor (``os.write`` may write less), and reading one to
its end (a helper's pipe: ``os.read`` gives what has come so far)."""

from __future__ import annotations

import os

__all__ = ["read_all", "write_all"]


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """Write all of ``data`` to ``fd`` (a file, or a pipe that takes it in pieces)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def read_all(fd: int) -> bytes:
    """Everything ``fd`` gives until end of file (a pipe: until every writer closed it)."""
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)
