"""Writing to a descriptor until every byte is written (``os.write`` may write less)."""

from __future__ import annotations

import os

__all__ = ["write_all"]


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """Write all of ``data`` to ``fd`` (a file, or a pipe that takes it in pieces)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
