"""Verify on every load: exact bytes, no cache, tamper and revocation caught, CLI contract."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest_load import Site, make_site

import appliance
from appliance import audit
from appliance.errors import ObjectTamperedError, RevokedKeyError
from appliance.store import find, object_path
from bundles.errors import NotFoundError

V1 = b"weights v1 \x00\x01\x02" * 100


@pytest.fixture
def site(tmp_path: Path) -> Site:
    s = make_site(tmp_path)
    s.ship({"model@1.0": V1})
    return s


def flip_byte(site: Site, name: str, version: str, offset: int = 5) -> Path:
    db = site.h.db()
    path = object_path(site.h, find(db, name, version).digest)
    db.conn.close()
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 1]))
    os.chmod(path, 0o444)
    return path


def load_events(site: Site) -> list[dict[str, object]]:
    db = site.h.db()
    try:
        return [e for e in audit.rows(db, "model") if e["type"] == "load"]
    finally:
        db.conn.close()


def test_load_returns_exactly_the_signed_bytes(site: Site) -> None:
    with appliance.load("model", home=site.home) as art:
        assert art.read() == V1
        assert (art.name, art.version, art.size) == ("model", "1.0", len(V1))
        assert art.sealed
        with open(art.path, "rb") as f:  # /dev/fd/N names the same verified copy
            assert f.read() == V1
        fd = art.fd
    assert art.closed
    with pytest.raises(OSError):
        os.fstat(fd)
    with appliance.load("model@1.0", home=site.home) as art:
        assert art.read() == V1
    events = load_events(site)
    assert [e["outcome"] for e in events] == ["verified", "verified"]


def test_every_load_rehashes_no_cache(site: Site) -> None:
    with appliance.load("model", home=site.home) as art:
        assert art.read() == V1
    flip_byte(site, "model", "1.0")
    with pytest.raises(ObjectTamperedError):
        appliance.load("model", home=site.home)
    assert [e["outcome"] for e in load_events(site)] == ["verified", "rejected"]
    assert load_events(site)[-1]["code"] == "object_tampered"


def test_sealed_copy_cannot_be_written(site: Site) -> None:
    with appliance.load("model", home=site.home) as art:
        with pytest.raises(PermissionError):
            os.pwrite(art.fd, b"x", 0)
        with pytest.raises(OSError):
            os.ftruncate(art.fd, 1)
        assert art.read() == V1


def test_unnamed_file_fallback_above_the_ram_cap(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APPLIANCE_SEAL_MAX", "0")
    with appliance.load("model", home=site.home) as art:
        assert not art.sealed
        assert art.read() == V1
        with pytest.raises(OSError):
            os.pwrite(art.fd, b"x", 0)  # handed over read-only
    assert not any(site.h.staging.iterdir())  # nothing left behind
    flip_byte(site, "model", "1.0")
    with pytest.raises(ObjectTamperedError):
        appliance.load("model", home=site.home)


def test_missing_or_symlinked_object_is_tampered(site: Site, tmp_path: Path) -> None:
    db = site.h.db()
    path = object_path(site.h, find(db, "model", "1.0").digest)
    db.conn.close()
    decoy = tmp_path / "decoy"
    decoy.write_bytes(V1)
    os.unlink(path)
    os.symlink(decoy, path)  # even a symlink to the right bytes is refused
    with pytest.raises(ObjectTamperedError):
        appliance.load("model", home=site.home)
    os.unlink(path)
    res = site.cli("load", "model", "-o", tmp_path / "x", "--json", check=4)
    assert res.json["error"]["code"] == "object_tampered"


def test_revoked_key_makes_load_fail(site: Site, tmp_path: Path) -> None:
    site.cli("trust", "apply", site.revoke(site.publisher), check=0)
    with pytest.raises(RevokedKeyError):
        appliance.load("model", home=site.home)
    res = site.cli("load", "model", "-o", tmp_path / "out", "--json", check=1)
    assert res.json["error"]["code"] == "revoked_key"
    assert not (tmp_path / "out").exists()


def test_unknown_name_or_version(site: Site) -> None:
    with pytest.raises(NotFoundError):
        appliance.load("nope", home=site.home)
    with pytest.raises(NotFoundError):
        appliance.load("model", "9.9", home=site.home)
    assert site.cli("load", "nope").code == 2
    assert site.cli("exec", "model@9.9", "--", "true").code == 2


def test_cli_load_to_file_and_stdout(site: Site, tmp_path: Path) -> None:
    out = tmp_path / "out.bin"
    res = site.cli("load", "model", "-o", out, "--json", check=0)
    assert out.read_bytes() == V1
    doc = res.json
    assert doc["ok"] and doc["name"] == "model" and doc["version"] == "1.0"
    assert doc["size"] == len(V1) and doc["copy"] == "sealed_memfd"
    assert doc["output"] == str(out)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.bin")] == []
    assert site.cli("load", "model", check=0).stdout == V1
    res = site.cli("load", "model", "--json", check=2)
    assert res.json["error"]["code"] == "usage"


def test_exec_passes_the_verified_descriptor(site: Site, tmp_path: Path) -> None:
    res = site.cli("exec", "model", "--", "cat", "{}", check=0)
    assert res.stdout == V1
    res = site.cli("exec", "model", "--", "sh", "-c", 'cat "/dev/fd/$APPLIANCE_FD"', check=0)
    assert res.stdout == V1
    res = site.cli("exec", "model", "--", "sh", "-c", "exit 7")
    assert res.code == 7  # exec replaced itself: the status is the command's
    assert site.cli("exec", "model", "--", "/nonexistent/cmd").code == 3


def test_tampered_object_exec_never_runs_the_command(site: Site, tmp_path: Path) -> None:
    flip_byte(site, "model", "1.0", offset=len(V1) - 1)
    marker = tmp_path / "ran"
    res = site.cli("--json", "exec", "model", "--", "touch", marker)
    assert res.code == 4
    assert res.json["error"]["code"] == "object_tampered"
    assert not marker.exists()
    res = site.cli("load", "model")
    assert res.code == 4 and res.stdout == b""
    assert "object_tampered" in res.stderr and "Traceback" not in res.stderr
