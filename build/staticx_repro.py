"""Run staticx with its archive made reproducible.

staticx writes its tar with the mtime, owner and group of temporary copies, so
two runs over one input differ. This wrapper pins every member's mtime to
``SOURCE_DATE_EPOCH`` and its owner to root before calling staticx's own main.
Usage: python build/staticx_repro.py INPUT OUTPUT (same arguments as staticx).
"""

from __future__ import annotations

import os
import sys
import tarfile
from typing import IO, Any

from staticx.__main__ import main

EPOCH = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
_addfile = tarfile.TarFile.addfile


def _pinned_addfile(
    self: tarfile.TarFile, tarinfo: tarfile.TarInfo, fileobj: IO[bytes] | None = None, *args: Any
) -> None:
    tarinfo.mtime = EPOCH
    tarinfo.uid = tarinfo.gid = 0
    tarinfo.uname = tarinfo.gname = "root"
    _addfile(self, tarinfo, fileobj, *args)


if __name__ == "__main__":
    tarfile.TarFile.addfile = _pinned_addfile  # type: ignore[method-assign]
    sys.exit(main())
