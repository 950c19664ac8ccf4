"""Helpers for the smoke test's chroots (build/smoke.sh); run with the project's venv.

``chroot_libs.py libs BINARY``: the host's shared libraries that a PyInstaller
one-file BINARY needs at run time but does not bundle (libc, the dynamic
loader, ...), one absolute path a line. The bundled shared objects are read out
of the binary's archive (as staticx does) and each goes through ``ldd``.

``chroot_libs.py interp FILE``: prints the ELF program interpreter of FILE (the
dynamic loader it asks for), or nothing for a static executable.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from elftools.elf.elffile import ELFFile
from PyInstaller.archive.readers import CArchiveReader

_LDD_LINE = re.compile(r"^\s*(?:(\S+)\s+=>\s+)?(/\S+)\s+\(0x[0-9a-f]+\)\s*$")


def _ldd(path: Path) -> list[str]:
    out = subprocess.run(["ldd", str(path)], capture_output=True, text=True, check=False).stdout
    found = []
    for line in out.splitlines():
        m = _LDD_LINE.match(line)
        if m:
            found.append(m.group(2))
    return found


def host_libs(binary: Path) -> list[str]:
    archive = CArchiveReader(str(binary))
    bundled: set[str] = set()
    needed: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="appliance-libs-") as tmp:
        for name, entry in archive.toc.items():
            if entry[-1] != "b":  # binaries only (shared objects, extensions)
                continue
            bundled.add(os.path.basename(name))
            path = Path(tmp) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(archive.extract(name))
            path.chmod(0o755)
            if path.read_bytes()[:4] == b"\x7fELF":
                needed.update(_ldd(path))
    # The bootloader itself runs before anything is extracted: all its own
    # libraries come from the host, bundled namesakes (libz) included.
    loader_needs = set(_ldd(binary))
    return sorted(loader_needs | {p for p in needed if os.path.basename(p) not in bundled})


def interp(path: Path) -> str:
    with path.open("rb") as f:
        for segment in ELFFile(f).iter_segments():
            if segment["p_type"] == "PT_INTERP":
                return str(segment.get_interp_name())
    return ""


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("libs", "interp"):
        print(__doc__, file=sys.stderr)
        return 2
    if argv[0] == "libs":
        print("\n".join(host_libs(Path(argv[1]))))
    else:
        print(interp(Path(argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
