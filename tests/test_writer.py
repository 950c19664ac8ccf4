"""The bundle writer: layout, parts, tar format, refusals, and digests equal to b3sum's."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conformance.driver import make_bundle, make_key, resolver_for

import bundles.hashing
import bundles.writer
import bundles.writer_copy
from bundles.dsse import sign_envelope
from bundles.errors import (
    ApplianceError,
    EnvelopeFormatError,
    OperationalError,
    UsageError,
)
from bundles.keys import PrivateKey
from bundles.reader import MANIFEST_FILE, open_bundle, verify_artifacts
from bundles.writer import ArtifactSpec, create_bundle

ISSUED = datetime(2025, 1, 1, tzinfo=UTC)
EXPIRES = ISSUED + timedelta(days=30)


def _src(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / "src" / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def _create(out: Path, specs: list[ArtifactSpec], key: PrivateKey, **kw: object) -> object:
    args: dict[str, object] = {
        "stream": "main",
        "sequence": 4,
        "keys": [key],
        "expires": EXPIRES,
        "issued_at": ISSUED,
        "any_site": True,
    }
    args.update(kw)
    return create_bundle(out, specs, **args)  # type: ignore[arg-type]


def test_directory_layout_and_defaults(tmp_path: Path) -> None:
    key = make_key()
    specs = [
        ArtifactSpec("org/model", "2.1", _src(tmp_path, "weights.safetensors", b"w" * 10)),
        ArtifactSpec("tok", "1", _src(tmp_path, "t.json", b"{}"), media_type="application/json"),
        ArtifactSpec("pinned", "1", _src(tmp_path, "p", b"p"), release=2),
    ]
    m = create_bundle(
        tmp_path / "out",
        specs,
        stream="main",
        sequence=4,
        keys=[key],
        expires=EXPIRES,
        issued_at=ISSUED,
        sites=["site-a"],
    )
    files = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*"))
    assert files == [
        "artifacts",
        "artifacts/org",
        "artifacts/org/model@2.1_weights.safetensors",
        "artifacts/pinned@1_p",
        "artifacts/tok@1_t.json",
        MANIFEST_FILE,
    ]
    assert [a.release for a in m.artifacts] == [4, 4, 2]  # release defaults to the sequence
    assert m.sites == ("site-a",) and not m.any_site
    assert m.artifacts[1].media_type == "application/json"
    with open_bundle(tmp_path / "out", resolver_for(key)) as b:
        assert b.manifest == m
        b.check_files()
        verify_artifacts(b)


def test_parts_naming_and_sizes(tmp_path: Path) -> None:
    data = os.urandom(2500)
    m = _create(
        tmp_path / "out", [ArtifactSpec("m", "1", _src(tmp_path, "m.bin", data))], make_key(),
        part_size=1000,
    )  # fmt: skip
    art = m.artifacts[0]  # type: ignore[attr-defined]
    assert art.path == "artifacts/m@1_m.bin"
    assert [(p.path, p.size) for p in art.parts] == [
        ("artifacts/m@1_m.bin.part0000", 1000),
        ("artifacts/m@1_m.bin.part0001", 1000),
        ("artifacts/m@1_m.bin.part0002", 500),
    ]
    joined = b"".join((tmp_path / "out" / p.path).read_bytes() for p in art.parts)
    assert joined == data
    assert not (tmp_path / "out" / art.path).exists()


def test_part_size_equal_to_file_is_not_split(tmp_path: Path) -> None:
    m = _create(
        tmp_path / "out", [ArtifactSpec("m", "1", _src(tmp_path, "m", b"x" * 1000))], make_key(),
        part_size=1000,
    )  # fmt: skip
    assert m.artifacts[0].parts == ()  # type: ignore[attr-defined]


def test_bad_basename_becomes_data(tmp_path: Path) -> None:
    m = _create(
        tmp_path / "out", [ArtifactSpec("m", "1", _src(tmp_path, "e\u0301\x01", b"x"))], make_key()
    )
    assert m.artifacts[0].path == "artifacts/m@1_data"  # type: ignore[attr-defined]


def test_too_long_leaf_keeps_the_folder_layout(tmp_path: Path) -> None:
    """NAME@VERSION_BASE over a file name's 255 bytes: artifacts/NAME/VERSION/BASE."""
    name, version = "n" * 120, "v" * 120
    key = make_key()
    base = "b" * 10
    m = _create(tmp_path / "out", [ArtifactSpec(name, version, _src(tmp_path, base, b"x"))], key)
    assert m.artifacts[0].path == f"artifacts/{name}/{version}/{base}"  # type: ignore[attr-defined]
    with open_bundle(tmp_path / "out", resolver_for(key)) as b:
        b.check_files()
        verify_artifacts(b)


def test_tar_format_is_deterministic_pax_root_owned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    key = make_key()
    specs = [ArtifactSpec("m", "1", _src(tmp_path, "m.bin", os.urandom(3000)))]
    trust = [sign_envelope("x/trust", b"{}", [key]).to_bytes()]
    for out in ("a.tar", "b.tar"):
        _create(tmp_path / out, specs, key, tar=True, part_size=1000, trust_updates=trust)
    a, b = (tmp_path / "a.tar").read_bytes(), (tmp_path / "b.tar").read_bytes()
    assert a == b  # Ed25519 is deterministic: same inputs, same bytes
    with tarfile.open(tmp_path / "a.tar") as tf:
        members = tf.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert "trust/0001.dsse.json" in names
    for m in members:
        assert (m.uid, m.gid, m.uname, m.gname, m.mtime) == (0, 0, "", "", 1700000000)
        assert m.mode == (0o755 if m.isdir() else 0o644)
        assert m.isdir() or m.isreg()
    assert not list(tmp_path.glob(".*.tmp"))
    with open_bundle(tmp_path / "a.tar", resolver_for(key)) as bundle:
        bundle.check_files()
        verify_artifacts(bundle)


def test_tar_mtime_defaults_to_zero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    _create(tmp_path / "a.tar", [ArtifactSpec("m", "1", _src(tmp_path, "m", b"1"))], make_key(),
            tar=True)  # fmt: skip
    with tarfile.open(tmp_path / "a.tar") as tf:
        assert {m.mtime for m in tf.getmembers()} == {0}


def test_sha256_listed(tmp_path: Path) -> None:
    data = os.urandom(5000)
    m = _create(
        tmp_path / "out", [ArtifactSpec("m", "1", _src(tmp_path, "m", data))], make_key(),
        sha256=True, part_size=999,
    )  # fmt: skip
    assert m.artifacts[0].sha256 == hashlib.sha256(data).hexdigest()  # type: ignore[attr-defined]


@pytest.mark.skipif(shutil.which("b3sum") is None, reason="b3sum is not installed")
def test_digests_equal_b3sum(tmp_path: Path) -> None:
    sources = {
        "empty": b"",
        "one": b"1",
        "chunk": os.urandom(1024),
        "chunk1": os.urandom(1025),
        "big": os.urandom(3 * 1024 * 1024 + 17),  # over the multithreaded threshold
    }
    specs = [ArtifactSpec(n, "1", _src(tmp_path, n, d)) for n, d in sources.items()]
    m = _create(tmp_path / "out", specs, make_key(), part_size=1 << 20)
    out = subprocess.run(
        ["b3sum", "--no-names", *(str(s.path) for s in specs)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert [a.blake3 for a in m.artifacts] == out  # type: ignore[attr-defined]


# --- refusals ------------------------------------------------------------------------


def _refuse(tmp_path: Path, cls: type[ApplianceError], code: str, **kw: object) -> None:
    src = _src(tmp_path, "f", b"x")
    specs = kw.pop("specs", [ArtifactSpec("m", "1", src)])
    with pytest.raises(cls) as info:
        _create(tmp_path / "out", specs, make_key(), **kw)  # type: ignore[arg-type]
    assert info.value.code == code
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert not list(tmp_path.glob(".out.*"))  # no staging left behind


def test_no_sites_is_usage_error(tmp_path: Path) -> None:
    _refuse(tmp_path, UsageError, "usage", any_site=False)


def test_sites_and_any_site_is_usage_error(tmp_path: Path) -> None:
    _refuse(tmp_path, UsageError, "usage", sites=["a"], any_site=True)


@pytest.mark.parametrize(
    "spec",
    [
        ("Bad Name", "1", "application/octet-stream", None),
        ("../x", "1", "application/octet-stream", None),
        ("m", "1/2", "application/octet-stream", None),
        ("m", "1", "not a type", None),
        ("m", "1", "application/octet-stream", 0),
    ],
)
def test_bad_input_is_usage_error(tmp_path: Path, spec: tuple[str, str, str, int | None]) -> None:
    name, version, mtype, release = spec
    src = _src(tmp_path, "f", b"x")
    _refuse(
        tmp_path, UsageError, "usage",
        specs=[ArtifactSpec(name, version, src, media_type=mtype, release=release)],
    )  # fmt: skip


def test_case_fold_duplicate_names_are_usage_error(tmp_path: Path) -> None:
    src = _src(tmp_path, "f", b"x")
    specs = [ArtifactSpec("m", "1", src), ArtifactSpec("M", "1", src)]
    _refuse(tmp_path, UsageError, "usage", specs=specs)


def test_names_that_nest_do_not_collide(tmp_path: Path) -> None:
    """``a`` and ``a/b``: the folder layout put a/b/c under a file; the flat one does not."""
    a, b = _src(tmp_path, "c", b"1"), _src(tmp_path, "x", b"2")
    specs = [ArtifactSpec("a", "b", a), ArtifactSpec("a/b", "c", b)]
    key = make_key()
    m = _create(tmp_path / "out", specs, key)
    assert [x.path for x in m.artifacts] == ["artifacts/a@b_c", "artifacts/a/b@c_x"]  # type: ignore[attr-defined]
    with open_bundle(tmp_path / "out", resolver_for(key)) as bundle:
        bundle.check_files()
        verify_artifacts(bundle)


def test_colliding_layout_is_usage_error(tmp_path: Path) -> None:
    """A long leaf keeps the folder layout, whose path another artifact's flat one can
    equal: refused before anything is written."""
    q = "q" * 196
    a, b = _src(tmp_path, f"z@1_{q}", b"1"), _src(tmp_path, q, b"2")
    specs = [ArtifactSpec("a" * 100, "1", a), ArtifactSpec("a" * 100 + "/1/z", "1", b)]
    _refuse(tmp_path, UsageError, "usage", specs=specs)


@pytest.mark.parametrize(
    "kw",
    [{"sequence": 0}, {"sequence": 2**53}, {"part_size": 0}, {"keys": []},
     {"expires": ISSUED - timedelta(seconds=1)}, {"specs": []}],
    ids=["seq0", "seq-huge", "part0", "no-keys", "expired", "no-artifacts"],
)  # fmt: skip
def test_bad_arguments_are_usage_errors(tmp_path: Path, kw: dict[str, object]) -> None:
    _refuse(tmp_path, UsageError, "usage", **kw)


def test_missing_source(tmp_path: Path) -> None:
    _refuse(
        tmp_path, OperationalError, "file_not_found",
        specs=[ArtifactSpec("m", "1", tmp_path / "absent")],
    )  # fmt: skip


def test_source_directory_is_usage_error(tmp_path: Path) -> None:
    _refuse(tmp_path, UsageError, "usage", specs=[ArtifactSpec("m", "1", tmp_path)])


def test_bad_trust_update(tmp_path: Path) -> None:
    _refuse(tmp_path, EnvelopeFormatError, "malformed_envelope", trust_updates=[b"{}"])


def test_existing_output_is_not_overwritten(tmp_path: Path) -> None:
    src = _src(tmp_path, "f", b"x")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep").write_bytes(b"mine")
    with pytest.raises(OperationalError) as info:
        _create(tmp_path / "out", [ArtifactSpec("m", "1", src)], make_key())
    assert info.value.code == "output_exists"
    assert (tmp_path / "out" / "keep").read_bytes() == b"mine"
    (tmp_path / "o.tar").write_bytes(b"mine")
    with pytest.raises(OperationalError):
        _create(tmp_path / "o.tar", [ArtifactSpec("m", "1", src)], make_key(), tar=True)
    assert (tmp_path / "o.tar").read_bytes() == b"mine"


def test_empty_output_directory_is_used(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    _create(tmp_path / "out", [ArtifactSpec("m", "1", _src(tmp_path, "f", b"x"))], make_key())
    assert (tmp_path / "out" / MANIFEST_FILE).is_file()


@pytest.mark.parametrize("change", ["before_open", "grow_while_read", "shrink_while_read"])
def test_source_changed_while_bundling_a_tar(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    """The tar writer streams each source once, hashing what it writes: a source that
    changed after it was named, or grew or shrank while it was read, is refused."""
    src = _src(tmp_path, "f", b"x" * 100)
    if change == "before_open":
        _grow_after_stat(monkeypatch, src)
    else:
        real_read = bundles.writer._HashingRange.readinto

        def read_then_change(self: object, buf: memoryview) -> int:
            n = real_read(self, buf)  # type: ignore[arg-type]
            if change == "grow_while_read":
                with open(src, "ab") as f:
                    f.write(b"more")
            else:
                os.truncate(src, 10)
            return n

        monkeypatch.setattr(bundles.writer._HashingRange, "readinto", read_then_change)
    _expect_changed(tmp_path, src, True)


def test_a_tar_bundle_reads_each_source_once_and_signs_what_it_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One open and one pass a source, parts included; the signed digests are those of
    the bytes in the tar (read back by the reader)."""
    srcs = [_src(tmp_path, f"f{i}", os.urandom(1000 + i)) for i in range(3)]
    opened: list[str] = []
    real_open = os.open

    def counting_open(path: object, *args: object, **kw: object) -> int:
        if str(path) in {str(p) for p in srcs}:
            opened.append(str(path))
        return real_open(path, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(bundles.writer.os, "open", counting_open)
    out = tmp_path / "o.tar"
    key = make_key()
    specs = [ArtifactSpec(f"m{i}", "1", p) for i, p in enumerate(srcs)]
    _create(out, specs, key, tar=True, part_size=256, sha256=True)
    assert sorted(opened) == sorted(str(p) for p in srcs)
    with open_bundle(out, resolver_for(key)) as bundle:
        verify_artifacts(bundle)
        for i, p in enumerate(srcs):
            art = bundle.manifest.artifact(f"m{i}")
            assert art is not None and art.sha256 == hashlib.sha256(p.read_bytes()).hexdigest()
    with tarfile.open(out) as tf:
        names = tf.getnames()
        assert names == sorted(names)
        for i, p in enumerate(srcs):
            parts = sorted(n for n in names if f"m{i}@1_" in n and ".part" in n)
            data = b"".join(tf.extractfile(n).read() for n in parts)  # type: ignore[union-attr]
            assert data == p.read_bytes()


@pytest.mark.parametrize("when", ["before_open", "while_read"])
def test_source_changed_in_the_one_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    """The directory writer reads each source once: a source that grew after it was
    named (its fstat differs) or while it was read (one byte more than its size) is
    refused."""
    src = _src(tmp_path, "f", b"x" * 100)
    if when == "before_open":
        _grow_after_stat(monkeypatch, src)
    else:
        real_fstat = os.fstat
        ino = src.stat().st_ino
        seen: list[int] = []

        def fstat_then_change(fd: int) -> os.stat_result:
            st = real_fstat(fd)
            if not seen and st.st_ino == ino:
                seen.append(fd)
                with open(src, "ab") as f:  # after the identity check, before the read
                    f.write(b"more")
            return st

        monkeypatch.setattr(bundles.writer_copy.os, "fstat", fstat_then_change)
    _expect_changed(tmp_path, src, False)


def test_source_that_grew_just_after_its_read_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The read asks for one byte more than the size and got exactly the size; the file
    grows right after: the identity check after the copy (its ``st_size``) refuses it."""
    src = _src(tmp_path, "f", b"x" * 100)
    real = os.pread

    def pread_then_grow(fd: int, n: int, offset: int) -> bytes:
        data = real(fd, n, offset)
        with open(src, "ab") as f:
            f.write(b"more")
        return data

    monkeypatch.setattr(bundles.writer_copy.os, "pread", pread_then_grow)
    _expect_changed(tmp_path, src, False)


@pytest.mark.parametrize("change", [None, "shrink", "grow"])
def test_short_reads_are_read_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str | None
) -> None:
    """A file system that returns a few bytes per read (FUSE, NFS may): the writer reads
    on until it has the size and one byte more or the end; the bundle holds exactly the
    bytes, or a file that shrank or grew meanwhile is refused."""
    data = os.urandom(1000)
    src = _src(tmp_path, "f", data)
    real = os.pread
    calls = [0]

    def short_pread(fd: int, n: int, offset: int) -> bytes:
        calls[0] += 1
        if calls[0] == 3 and change == "shrink":
            os.truncate(src, 500)
        if calls[0] == 3 and change == "grow":
            with open(src, "ab") as f:
                f.write(b"more")
        return real(fd, min(n, 7), offset)

    monkeypatch.setattr(bundles.writer_copy.os, "pread", short_pread)
    if change is not None:
        _expect_changed(tmp_path, src, False)
        return
    _create(tmp_path / "out", [ArtifactSpec("m", "1", src)], make_key())
    monkeypatch.setattr(bundles.writer_copy.os, "pread", real)
    assert calls[0] == 1000 // 7 + 2  # 142 of 7 bytes, one of 6, then the end (0 bytes)
    [stored] = (tmp_path / "out" / "artifacts").iterdir()
    assert stored.read_bytes() == data


def _grow_after_stat(monkeypatch: pytest.MonkeyPatch, src: Path) -> None:
    """The source grows just after the writer took its ``stat`` (before it is opened)."""
    real_stat = bundles.writer._stat_source

    def stat_then_change(spec: ArtifactSpec) -> os.stat_result:
        st = real_stat(spec)
        with open(src, "ab") as f:
            f.write(b"more")
        return st

    monkeypatch.setattr(bundles.writer, "_stat_source", stat_then_change)


def _expect_changed(tmp_path: Path, src: Path, tar: bool) -> None:
    out = tmp_path / ("o.tar" if tar else "out")
    with pytest.raises(OperationalError) as info:
        _create(out, [ArtifactSpec("m", "1", src)], make_key(), tar=tar)
    assert info.value.code == "source_changed"
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_factory_knobs(tmp_path: Path) -> None:
    past = datetime.now(UTC) - timedelta(days=2)
    b = make_bundle(tmp_path, sequence=9, stream="s2", sites=("x",), expires=past)
    assert b.manifest.sequence == 9 and b.manifest.stream == "s2"
    assert b.manifest.sites == ("x",) and b.manifest.expires < datetime.now(UTC)


def test_a_tar_bundle_of_more_sources_than_open_files_allowed(tmp_path: Path) -> None:
    """One source open at a time: a tar of 200 sources under a limit of about 40 more
    open files than the process has (the writer kept every source open to the end, and a
    tar of over 1,000 files failed with 'Too many open files' under the usual limit)."""
    import resource

    srcs = [_src(tmp_path, f"f{i}", os.urandom(64)) for i in range(200)]
    specs = [ArtifactSpec(f"m{i}", "1", p) for i, p in enumerate(srcs)]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 40, hard))
    try:
        _create(tmp_path / "o.tar", specs, make_key(), tar=True)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    with tarfile.open(tmp_path / "o.tar") as tf:
        assert len([n for n in tf.getnames() if n.startswith("artifacts/")]) == 200
