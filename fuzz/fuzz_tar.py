"""Atheris: the tar media reader (headers by offsets, never extracted) and bundle authentication.

Each input is written to a file in /dev/shm (or the temp folder) and opened as
a bundle tar: members listed and read, then the manifest authenticated. Only
``bundles.errors.ApplianceError`` may escape.
"""

from __future__ import annotations

import os
import sys
import tempfile

import atheris  # type: ignore[import-not-found,unused-ignore]

with atheris.instrument_imports():
    from _common import ALLOWED, PUB

    from bundles.media_tar import TarSource
    from bundles.reader import Bundle

_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
PATH = os.path.join(_DIR, f"fuzz-tar-{os.getpid()}.tar")
RESOLVER = {PUB.keyid: PUB.public}.get


def test_one_input(data: bytes) -> None:
    with open(PATH, "wb") as f:
        f.write(data)
    try:
        source = TarSource(PATH)
    except ALLOWED:
        return
    try:
        buf = bytearray(4096)
        for name in source.files():
            with source.open(name) as member:
                while member.readinto(buf):
                    pass
        try:
            Bundle(source, RESOLVER).check_files()
        except ALLOWED:
            pass
    except ALLOWED:
        pass
    finally:
        source.close()


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    try:
        atheris.Fuzz()
    finally:
        if os.path.exists(PATH):
            os.unlink(PATH)


if __name__ == "__main__":
    main()
