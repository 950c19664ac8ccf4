"""The media layer: every archive and directory trick refused with its own code."""

from __future__ import annotations

import gzip
import io
import os
import socket
import tarfile
from pathlib import Path

import pytest
from conformance.driver import fifo, pack_tar, tar_member

import bundles.media_dir
import bundles.media_tar
from bundles.errors import (
    ApplianceError,
    ArchiveDuplicateError,
    ArchiveError,
    ArchiveLinkError,
    ArchiveSpecialFileError,
    ArchiveUnsafePathError,
    ArtifactMissingError,
    BundleNotFoundError,
    ManifestTooLargeError,
    MediaError,
    NestingTooDeepError,
    NotABundleError,
    PathTooLongError,
    TooManyArtifactsError,
)
from bundles.media import open_media
from bundles.media_dir import DirectorySource
from bundles.media_tar import TarSource


def _refused(path: Path, cls: type[ApplianceError], code: str) -> ApplianceError:
    with pytest.raises(cls) as info:
        open_media(path).close()
    assert info.value.code == code
    assert info.type is cls
    return info.value


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


# --- open_media ---------------------------------------------------------------------


def test_absent_path_is_bundle_not_found_exit_3(tmp_path: Path) -> None:
    e = _refused(tmp_path / "nope", BundleNotFoundError, "bundle_not_found")
    assert e.exit_code == 3


def test_fifo_path_is_not_a_bundle(tmp_path: Path) -> None:
    _refused(fifo(tmp_path / "p"), NotABundleError, "not_a_bundle")


def test_directory_and_tar_sources(tmp_path: Path) -> None:
    d = _tree(tmp_path / "d", {"a": b"1", "x/y/z": b"hello"})
    with open_media(d) as src:
        assert isinstance(src, DirectorySource)
        assert dict(src.files()) == {"a": 1, "x/y/z": 5}
        assert src.read_bytes("x/y/z", 10, "f") == b"hello"
    t = pack_tar(tmp_path / "t.tar", d)
    with open_media(t) as src:
        assert isinstance(src, TarSource)
        assert dict(src.files()) == {"a": 1, "x/y/z": 5}
        assert src.read_bytes("x/y/z", 10, "f") == b"hello"


def test_read_bytes_limit_checked_before_reading(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    with open(d / "big", "wb") as f:
        f.truncate(1 << 40)  # sparse 1 TiB: reading it would never finish
    with open_media(d) as src:
        with pytest.raises(ManifestTooLargeError) as info:
            src.read_bytes("big", 1 << 20, "manifest")
        assert info.value.code == "manifest_too_large"
        with pytest.raises(ArtifactMissingError):
            src.read_bytes("absent", 10, "manifest")


def test_member_reader_stops_at_member_end_in_tar(tmp_path: Path) -> None:
    t = pack_tar(
        tmp_path / "t.tar",
        extra=[tar_member("a", b"A" * 700), tar_member("b", b"B" * 10)],
    )
    with open_media(t) as src, src.open("a") as m:
        assert m.size == 700 and m.offset > 0
        buf = bytearray(4096)
        assert m.readinto(buf) == 700
        assert bytes(buf[:700]) == b"A" * 700
        assert m.readinto(buf) == 0


def test_media_is_never_written(tmp_path: Path) -> None:
    d = _tree(tmp_path / "d", {"a": b"1", "x/y": b"2"})
    before = {p: p.stat().st_mtime_ns for p in [d, *d.rglob("*")]}
    with open_media(d) as src:
        for rel in src.files():
            with src.open(rel) as m:
                m.readinto(bytearray(10))
    assert {p: p.stat().st_mtime_ns for p in [d, *d.rglob("*")]} == before


# --- directory tricks ----------------------------------------------------------------


def test_dir_symlink_file(tmp_path: Path) -> None:
    d = _tree(tmp_path / "d", {"a": b"1"})
    (d / "link").symlink_to("/etc/passwd")
    _refused(d, ArchiveLinkError, "archive_link")


def test_dir_symlink_directory(tmp_path: Path) -> None:
    d = _tree(tmp_path / "d", {"a": b"1"})
    (d / "sub").symlink_to("/etc", target_is_directory=True)
    _refused(d, ArchiveLinkError, "archive_link")


def test_dir_fifo(tmp_path: Path) -> None:
    d = _tree(tmp_path / "d", {"a": b"1"})
    fifo(d / "pipe")
    _refused(d, ArchiveSpecialFileError, "archive_special_file")


def test_dir_socket(tmp_path: Path) -> None:
    d = _tree(tmp_path / "d", {"a": b"1"})
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(str(d / "sock"))
        _refused(d, ArchiveSpecialFileError, "archive_special_file")
    finally:
        s.close()


def test_dir_case_fold_duplicate(tmp_path: Path) -> None:
    d = _tree(tmp_path / "d", {"Model.bin": b"1", "model.bin": b"2"})
    if len(list(d.iterdir())) < 2:
        pytest.skip("case-insensitive filesystem")
    _refused(d, ArchiveDuplicateError, "archive_duplicate_member")


def test_dir_compatibility_look_alike_duplicate(tmp_path: Path) -> None:
    # U+FB01 LATIN SMALL LIGATURE FI is NFC-stable but folds to "fi"
    d = _tree(tmp_path / "d", {"\ufb01le": b"1", "file": b"2"})
    _refused(d, ArchiveDuplicateError, "archive_duplicate_member")


def test_dir_nfd_name(tmp_path: Path) -> None:
    d = _tree(tmp_path / "d", {"caf\u00e9": b"1", "cafe\u0301": b"2"})
    _refused(d, ArchiveUnsafePathError, "archive_unsafe_path")


def test_dir_control_character_name(tmp_path: Path) -> None:
    d = _tree(tmp_path / "d", {"a\x1bb": b"1"})
    _refused(d, ArchiveUnsafePathError, "archive_unsafe_path")


def test_dir_undecodable_name(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    with open(os.path.join(os.fsencode(d), b"bad\xff"), "wb") as f:
        f.write(b"x")
    _refused(d, ArchiveUnsafePathError, "archive_unsafe_path")


def test_dir_nesting_too_deep(tmp_path: Path) -> None:
    d = tmp_path / "d"
    deep = d.joinpath(*["n"] * 33)
    deep.mkdir(parents=True)
    _refused(d, NestingTooDeepError, "nesting_too_deep")
    ok = tmp_path / "ok"
    ok.joinpath(*["n"] * 31).mkdir(parents=True)
    ok.joinpath(*["n"] * 31, "f").write_bytes(b"x")  # 32 levels: allowed
    open_media(ok).close()


def test_dir_too_many_entries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bundles.media_dir, "MAX_ENTRIES", 5)
    d = _tree(tmp_path / "d", {f"f{i}": b"" for i in range(6)})
    _refused(d, TooManyArtifactsError, "too_many_artifacts")


def test_dir_path_too_long(tmp_path: Path) -> None:
    d = tmp_path / "d"
    p = d.joinpath(*["x" * 200] * 5, "f" * 100)
    p.parent.mkdir(parents=True)
    p.write_bytes(b"1")
    _refused(d, PathTooLongError, "path_too_long")


def test_dir_file_swapped_after_listing(tmp_path: Path) -> None:
    d = _tree(tmp_path / "d", {"a": b"1"})
    with open_media(d) as src:
        (d / "a").rename(tmp_path / "kept")  # keeps the inode in use: no reuse
        (d / "a").write_bytes(b"other")
        with pytest.raises(MediaError) as info:
            src.open("a")
        assert info.value.code == "media_changed"


def test_dir_file_swapped_for_symlink_after_listing(tmp_path: Path) -> None:
    d = _tree(tmp_path / "d", {"sub/a": b"1", "b": b"2"})
    with open_media(d) as src:
        (d / "b").unlink()
        (d / "b").symlink_to("/etc/passwd")
        with pytest.raises(ArchiveLinkError):
            src.open("b")
        (d / "sub" / "a").unlink()
        (d / "sub").rmdir()
        (d / "sub").symlink_to(tmp_path, target_is_directory=True)
        with pytest.raises(ArchiveLinkError):
            src.open("sub/a")


def test_dir_member_grows_and_size_is_fresh(tmp_path: Path) -> None:
    d = _tree(tmp_path / "d", {"a": b"123"})
    with open_media(d) as src, src.open("a") as m:
        assert m.size == 3
        with open(d / "a", "ab") as f:
            f.write(b"45")
        assert m.size == 5


# --- tar tricks --------------------------------------------------------------------


def _tar(tmp_path: Path, *members: tuple[tarfile.TarInfo, bytes | None]) -> Path:
    return pack_tar(tmp_path / "t.tar", extra=[tar_member("ok", b"fine"), *members])


@pytest.mark.parametrize(
    ("member", "cls", "code"),
    [
        (tar_member("s", type=tarfile.SYMTYPE, linkname="/etc/passwd"), ArchiveLinkError,
         "archive_link"),
        (tar_member("h", type=tarfile.LNKTYPE, linkname="ok"), ArchiveLinkError, "archive_link"),
        (tar_member("c", type=tarfile.CHRTYPE), ArchiveSpecialFileError, "archive_special_file"),
        (tar_member("b", type=tarfile.BLKTYPE), ArchiveSpecialFileError, "archive_special_file"),
        (tar_member("f", type=tarfile.FIFOTYPE), ArchiveSpecialFileError, "archive_special_file"),
        (tar_member("k", b"x", type=tarfile.CONTTYPE), ArchiveSpecialFileError,
         "archive_special_file"),
        (tar_member("/etc/evil", b"x"), ArchiveUnsafePathError, "archive_unsafe_path"),
        (tar_member("../evil", b"x"), ArchiveUnsafePathError, "archive_unsafe_path"),
        (tar_member("a/../../evil", b"x"), ArchiveUnsafePathError, "archive_unsafe_path"),
        (tar_member("a\\b", b"x"), ArchiveUnsafePathError, "archive_unsafe_path"),
        (tar_member("a//b", b"x"), ArchiveUnsafePathError, "archive_unsafe_path"),
        (tar_member("a/./b", b"x"), ArchiveUnsafePathError, "archive_unsafe_path"),
        (tar_member("bad\x07name", b"x"), ArchiveUnsafePathError, "archive_unsafe_path"),
        (tar_member("cafe\u0301", b"x"), ArchiveUnsafePathError, "archive_unsafe_path"),
        (tar_member("ok", b"again"), ArchiveDuplicateError, "archive_duplicate_member"),
        (tar_member("OK", b"x"), ArchiveDuplicateError, "archive_duplicate_member"),
        (tar_member("\uff4f\uff4b", b"x"), ArchiveDuplicateError, "archive_duplicate_member"),
        (tar_member("ok/inner", b"x"), ArchiveDuplicateError, "archive_duplicate_member"),
        (tar_member("ok", type=tarfile.DIRTYPE), ArchiveDuplicateError,
         "archive_duplicate_member"),
    ],
    ids=[
        "symlink", "hardlink", "chardev", "blockdev", "fifo", "contiguous", "absolute",
        "dotdot", "dotdot-inner", "backslash", "empty-segment", "dot-segment", "control-char",
        "nfd", "duplicate", "case-fold-duplicate", "fullwidth-look-alike", "file-then-dir",
        "file-and-dir-member",
    ],
)  # fmt: skip
def test_tar_trick(
    tmp_path: Path, member: tuple[tarfile.TarInfo, bytes | None], cls: type, code: str
) -> None:
    _refused(_tar(tmp_path, member), cls, code)


def test_tar_nfc_nfd_look_alike_pair(tmp_path: Path) -> None:
    t = pack_tar(
        tmp_path / "t.tar", extra=[tar_member("caf\u00e9", b"1"), tar_member("cafe\u0301", b"2")]
    )
    _refused(t, ArchiveUnsafePathError, "archive_unsafe_path")


def test_tar_sparse_member(tmp_path: Path) -> None:
    info, data = tar_member("sp", b"x")
    info.type = tarfile.GNUTYPE_SPARSE
    t = pack_tar(tmp_path / "t.tar", extra=[(info, data)], fmt=tarfile.GNU_FORMAT)
    with pytest.raises(ArchiveError):
        open_media(t).close()


def test_tar_dir_then_children_and_dot_slash_prefix(tmp_path: Path) -> None:
    t = pack_tar(
        tmp_path / "t.tar",
        extra=[
            tar_member(".", type=tarfile.DIRTYPE),
            tar_member("./d", type=tarfile.DIRTYPE),
            tar_member("./d/f", b"abc"),
        ],
    )
    with open_media(t) as src:
        assert dict(src.files()) == {"d/f": 3}


def test_tar_dir_listed_after_its_children(tmp_path: Path) -> None:
    t = pack_tar(
        tmp_path / "t.tar",
        extra=[tar_member("d/f", b"abc"), tar_member("d", type=tarfile.DIRTYPE)],
    )
    with open_media(t) as src:
        assert dict(src.files()) == {"d/f": 3}


def test_tar_directory_twice(tmp_path: Path) -> None:
    d = tar_member("d", type=tarfile.DIRTYPE)
    t = pack_tar(tmp_path / "t.tar", extra=[d, tar_member("d", type=tarfile.DIRTYPE)])
    _refused(t, ArchiveDuplicateError, "archive_duplicate_member")


def test_tar_compressed_is_refused(tmp_path: Path) -> None:
    raw = pack_tar(tmp_path / "t.tar", extra=[tar_member("a", b"1")]).read_bytes()
    gz = tmp_path / "t.tar.gz"
    gz.write_bytes(gzip.compress(raw))
    e = _refused(gz, ArchiveError, "archive_corrupt")
    assert "compressed" in e.message


def test_tar_member_past_end_of_file(tmp_path: Path) -> None:
    t = pack_tar(tmp_path / "t.tar", extra=[tar_member("a", b"x" * 5000)])
    with open(t, "r+b") as f:
        f.truncate(512 * 3)  # header + 2 data blocks of 10
    _refused(t, ArchiveError, "archive_corrupt")


def test_tar_truncated_at_header_boundary(tmp_path: Path) -> None:
    t = pack_tar(tmp_path / "t.tar", extra=[tar_member("a", b"x" * 512)])
    with open(t, "r+b") as f:
        f.truncate(1024)  # header and data, no end-of-archive block
    _refused(t, ArchiveError, "archive_corrupt")


def test_tar_garbage_after_members(tmp_path: Path) -> None:
    t = pack_tar(tmp_path / "t.tar", extra=[tar_member("a", b"x" * 512)])
    data = bytearray(t.read_bytes())
    data[1024:1536] = b"\x01" * 512  # a corrupt header where the end block was
    t.write_bytes(bytes(data))
    _refused(t, ArchiveError, "archive_corrupt")


def test_tar_empty_file_and_random_bytes(tmp_path: Path) -> None:
    e = tmp_path / "empty.tar"
    e.write_bytes(b"")
    assert _refused(e, NotABundleError, "not_a_bundle").exit_code == 2
    r = tmp_path / "rand.tar"
    r.write_bytes(os.urandom(4096))
    _refused(r, NotABundleError, "not_a_bundle")
    text = tmp_path / "notes.txt"
    text.write_text("these are my notes, not a bundle\n" * 40)
    _refused(text, NotABundleError, "not_a_bundle")


def test_tar_too_many_members(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bundles.media_tar, "MAX_ENTRIES", 5)
    t = pack_tar(tmp_path / "t.tar", extra=[tar_member(f"f{i}", b"") for i in range(6)])
    _refused(t, TooManyArtifactsError, "too_many_artifacts")


def test_tar_nesting_too_deep(tmp_path: Path) -> None:
    t = pack_tar(tmp_path / "t.tar", extra=[tar_member("/".join(["n"] * 33), b"x")])
    _refused(t, NestingTooDeepError, "nesting_too_deep")


def test_tar_huge_pax_header_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bundles.media_tar, "MAX_HEADER_READ", 4096)
    info, data = tar_member("a", b"1")
    info.pax_headers = {"comment": "c" * 10_000}
    t = pack_tar(tmp_path / "t.tar", extra=[(info, data)])
    _refused(t, ArchiveError, "archive_corrupt")


def test_tar_long_pax_name_is_read(tmp_path: Path) -> None:
    name = "/".join(["segment" * 10] * 8)  # 567 bytes: needs a pax header
    t = pack_tar(tmp_path / "t.tar", extra=[tar_member(name, b"abc")])
    with open_media(t) as src:
        assert dict(src.files()) == {name: 3}


def test_tar_shrunk_after_listing_reads_short(tmp_path: Path) -> None:
    t = pack_tar(tmp_path / "t.tar", extra=[tar_member("a", b"x" * 3000)])
    with open_media(t) as src:
        with open(t, "r+b") as f:
            f.truncate(1000)
        with pytest.raises(MediaError) as info:
            src.read_bytes("a", 10_000, "file")
        assert info.value.code == "media_changed"


def test_tar_ustar_and_gnu_formats_read(tmp_path: Path) -> None:
    for fmt in (tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
            info, data = tar_member("x/y", b"data")
            tf.addfile(info, io.BytesIO(data or b""))
        p = tmp_path / f"t{fmt}.tar"
        p.write_bytes(buf.getvalue())
        with open_media(p) as src:
            assert src.read_bytes("x/y", 100, "f") == b"data"
