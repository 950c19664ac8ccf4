"""The cost of one hostile pax header (CVE-2024-6232) with and without the guard.

``python bench/pax_header_cost.py`` under each Python to compare (with the
project's dependencies importable, e.g. ``PYTHONPATH=.venv/lib/python3.11/site-packages``
for another 3.11). Prints, for a header of ``"2 " * n + "="``, what
``open_media`` answered and how long it took, with the guard and with it
switched off. A vulnerable ``tarfile`` (before 3.11.10 without the backport)
grows quadratically without the guard.
"""

from __future__ import annotations

import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bundles.media_tar as media_tar
from bundles.errors import ApplianceError
from bundles.media import open_media

BLOCK = 512


def hostile_tar(path: Path, body: bytes) -> Path:
    pax = tarfile.TarInfo("././@PaxHeader")
    pax.type = tarfile.XHDTYPE
    pax.size = len(body)
    member = tarfile.TarInfo("a")
    member.size = 1
    out = pax.tobuf(tarfile.USTAR_FORMAT) + body + b"\0" * (-len(body) % BLOCK)
    out += member.tobuf(tarfile.USTAR_FORMAT) + b"1" + b"\0" * (BLOCK - 1) + b"\0" * 1024
    path.write_bytes(out)
    return path


def main() -> None:
    print(sys.version.split()[0], tarfile.__file__)
    real = media_tar.check_pax_records
    with tempfile.TemporaryDirectory() as tmp:
        for n in (5_000, 10_000, 20_000):
            path = hostile_tar(Path(tmp) / f"{n}.tar", b"2 " * n + b"=\n")
            for guard in (True, False):
                media_tar.check_pax_records = real if guard else (lambda buf, loc: 0)
                start = time.perf_counter()
                try:
                    open_media(str(path)).close()
                    answer = "accepted"
                except ApplianceError as e:
                    answer = e.code
                took = time.perf_counter() - start
                print(f"n={n:>6} guard={'on ' if guard else 'off'} {answer:16} {took:.3f} s")
    media_tar.check_pax_records = real


if __name__ == "__main__":
    main()
