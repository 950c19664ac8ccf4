"""A stdout stand-in that counts its writes (pins "written in one go" by counting)."""

from __future__ import annotations

import io


class CountingOut(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, s: str) -> int:
        self.writes += 1
        return super().write(s)

    def isatty(self) -> bool:
        return False
