"""Hostile pax headers are refused by a linear check before tarfile parses them.

CVE-2024-6232: CPython's tarfile before 3.11.10 parses pax records with
backtracking regular expressions, quadratic in hostile input. The guard in
``bundles.media_tar`` checks each pax header's raw bytes first; these tests pin
its work by counting (bytes handed to it, records it checked, and whether
tarfile's own pax parser ran at all), never by timing.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import pytest
from conformance.driver import pack_tar, tar_member

import bundles.media_tar
from bundles.errors import ArchiveError, ArchiveSpecialFileError
from bundles.media import open_media
from bundles.media_tar import MAX_PAX_DIGIT_RUN, check_pax_records

BLOCK = 512


def _raw_pax_tar(path: Path, body: bytes, *, pax_type: bytes = tarfile.XHDTYPE) -> Path:
    """A tar whose first header is a pax header with exactly ``body`` (as a hostile writer
    makes it, not as tarfile would), then one regular member ``a`` and the end blocks."""
    pax = tarfile.TarInfo("././@PaxHeader")
    pax.type = pax_type
    pax.size = len(body)
    out = bytearray(pax.tobuf(tarfile.USTAR_FORMAT))
    out += body + b"\0" * (-len(body) % BLOCK)
    info, data = tar_member("a", b"1")
    out += info.tobuf(tarfile.USTAR_FORMAT) + b"1" + b"\0" * (BLOCK - 1)
    out += b"\0" * (2 * BLOCK)
    path.write_bytes(bytes(out))
    return path


class _Counted:
    """Records the header file objects of one open, and how many pax headers tarfile's
    own parser got to parse (``_proc_pax`` calls not stopped by our guard inside the read
    of the header's body, which comes before any parsing)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.files: list[Any] = []
        self.proc_pax_calls = 0
        counted = self
        real_proc_pax = tarfile.TarInfo._proc_pax  # type: ignore[attr-defined]

        class HeaderFile(bundles.media_tar._HeaderFile):
            def __init__(self, *args: Any) -> None:
                super().__init__(*args)
                counted.files.append(self)

        def proc_pax(self: tarfile.TarInfo, tf: tarfile.TarFile) -> Any:
            try:
                result = real_proc_pax(self, tf)
            except ArchiveError:
                raise  # raised by our read of the body: tarfile never had the bytes
            except BaseException:
                counted.proc_pax_calls += 1
                raise
            counted.proc_pax_calls += 1
            return result

        monkeypatch.setattr(bundles.media_tar, "_HeaderFile", HeaderFile)
        monkeypatch.setattr(tarfile.TarInfo, "_proc_pax", proc_pax)

    @property
    def inspected(self) -> int:
        return sum(f.pax_bytes_inspected for f in self.files)

    @property
    def records(self) -> int:
        return sum(f.pax_records for f in self.files)

    @property
    def headers(self) -> int:
        return sum(f.pax_headers for f in self.files)


def _refused(path: Path, cls: type[ArchiveError], code: str) -> ArchiveError:
    with pytest.raises(cls) as info:
        open_media(path).close()
    assert info.type is cls
    assert info.value.code == code
    assert info.value.exit_code == 1
    return info.value


# The CVE's shape: records of length 2 ("2 ") whose keyword scan runs to a far "=";
# tarfile <3.11.10 rescans the rest of the buffer for each of the ~n/2 records.
QUADRATIC = b"2 " * 200_000 + b"=\n"


def test_quadratic_pax_records_refused_before_tarfile_parses_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = _raw_pax_tar(tmp_path / "q.tar", QUADRATIC)
    counted = _Counted(monkeypatch)
    _refused(t, ArchiveError, "archive_corrupt")
    assert counted.proc_pax_calls == 0  # tarfile's regular expressions never saw it
    assert counted.headers == 1
    assert counted.inspected == len(QUADRATIC) + (-len(QUADRATIC) % BLOCK)  # read once
    assert counted.records == 0  # refused at the first record, before any was accepted


def test_without_the_guard_tarfile_would_parse_the_hostile_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guard is what stops it: with the check disabled, tarfile's pax parser runs."""
    small = b"2 " * 50 + b"=\n"
    t = _raw_pax_tar(tmp_path / "q.tar", small)
    counted = _Counted(monkeypatch)
    monkeypatch.setattr(bundles.media_tar, "check_pax_records", lambda buf, loc: 0)
    try:
        open_media(t).close()
    except ArchiveError:
        pass  # the fixed tarfile refuses it too, the vulnerable one parses it
    assert counted.proc_pax_calls == 1


@pytest.mark.parametrize(
    "body,why",
    [
        (b"9" * 1000 + b" a=b\n", "length with too many digits"),
        (b"12345678 a=b\n", "8 digits: over the 1 MiB cap"),
        (b"4 a=\n", "length below 5"),
        (b"99 a=b\n", "length past the end"),
        (b"7 a=bc\n" + b"x", "bytes after the last record"),
        (b"8 abcde\n", "no '='"),
        (b"6 =ab\n", "empty keyword"),
        (b"7 a=bcd", "record without a newline"),
        (b"a=b\n", "no length field"),
        (b" 5 a=\n", "leading space"),
        (b"100 comment=" + b"1" * 87 + b"\n", "a digit run longer than the cap"),
    ],
)
def test_malformed_pax_records_are_archive_corrupt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: bytes, why: str
) -> None:
    t = _raw_pax_tar(tmp_path / "m.tar", body)
    counted = _Counted(monkeypatch)
    _refused(t, ArchiveError, "archive_corrupt")
    assert counted.proc_pax_calls == 0, why


def test_global_and_solaris_pax_headers_are_checked_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for kind in (tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE):
        t = _raw_pax_tar(tmp_path / "g.tar", QUADRATIC, pax_type=kind)
        counted = _Counted(monkeypatch)
        _refused(t, ArchiveError, "archive_corrupt")
        assert counted.proc_pax_calls == 0


def test_gnu_sparse_keywords_are_refused_before_tarfile_scans_for_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = b"22 GNU.sparse.size=10\n"
    assert len(body) == 22
    t = _raw_pax_tar(tmp_path / "s.tar", body)
    counted = _Counted(monkeypatch)
    _refused(t, ArchiveSpecialFileError, "archive_special_file")
    assert counted.proc_pax_calls == 0


def test_digit_runs_up_to_the_cap_and_honest_pax_headers_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "/".join(["segment" * 10] * 8)  # 567 bytes: needs a pax path record
    info, data = tar_member(name, b"abc")
    info.pax_headers = {"comment": "7" * MAX_PAX_DIGIT_RUN, "mtime": "1700000000.123456789"}
    unicode_info, udata = tar_member("ünïcödé", b"xy")
    t = pack_tar(tmp_path / "ok.tar", extra=[(info, data), (unicode_info, udata)])
    counted = _Counted(monkeypatch)
    with open_media(t) as src:
        assert dict(src.files()) == {name: 3, "ünïcödé": 2}
    assert counted.headers == 2
    assert counted.proc_pax_calls == 2
    assert counted.records >= 4


def test_guard_work_is_linear_in_the_header(tmp_path: Path) -> None:
    """Many small well-formed records: one record checked per record, each byte once."""
    record = b"6 a=b\n"
    for count in (1_000, 10_000, 100_000):
        assert check_pax_records(record * count + b"\0" * 10, "x") == count


def test_pax_header_over_the_read_cap_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bundles.media_tar, "MAX_HEADER_READ", 4096)
    t = _raw_pax_tar(tmp_path / "big.tar", b"6 a=b\n" * 2000)
    counted = _Counted(monkeypatch)
    _refused(t, ArchiveError, "archive_corrupt")
    assert counted.inspected == 0  # refused by size before a byte of it was read


def test_tarfile_reads_headers_as_the_guard_expects() -> None:
    """The guard relies on tarfile reading each header as one 512-byte block and a pax
    header's body with the read right after it; pin that on this Python."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("x" * 300)
        info.size = 1
        tf.addfile(info, io.BytesIO(b"1"))
    raw = buf.getvalue()
    reads: list[tuple[int, int]] = []

    class Spy(io.BytesIO):
        def read(self, n: int | None = -1) -> bytes:
            pos = self.tell()
            data = super().read(n)
            reads.append((pos, len(data)))
            return data

    with tarfile.open(fileobj=Spy(raw), mode="r:") as tf:
        assert [m.name for m in tf.getmembers()] == ["x" * 300]
    assert raw[156:157] == tarfile.XHDTYPE
    assert reads[0] == (0, BLOCK)
    assert reads[1][0] == BLOCK  # the pax body, read right after its header
