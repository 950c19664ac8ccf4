"""``appliance bundle create|inspect`` end to end, as a subprocess (exit codes, JSON, stderr)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
from conformance.driver import flip_bit, pack_tar, tamper_payload, tar_member

from bundles.hashing import hash_path
from bundles.keys import PrivateKey, save_keypair

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "appliance", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )


def ok_json(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    assert doc["ok"] is True
    return doc


def refused(proc: subprocess.CompletedProcess[str], exit_code: int, code: str) -> None:
    """Exit code as given, exactly one clear line on stderr, no traceback."""
    assert proc.returncode == exit_code, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"appliance: error [{code}]: "), lines[0]
    assert "Traceback" not in proc.stderr


@pytest.fixture
def env(tmp_path: Path) -> dict[str, Path]:
    key = PrivateKey.generate()
    other = PrivateKey.generate()
    priv, pub = save_keypair(key, tmp_path / "keys", "pub")
    _, other_pub = save_keypair(other, tmp_path / "keys", "other")
    model = tmp_path / "model.bin"
    model.write_bytes(os.urandom(2500))
    tok = tmp_path / "tok.json"
    tok.write_bytes(b'{"v": 1}')
    return {
        "key": priv,
        "pub": pub,
        "other": other_pub,
        "model": model,
        "tok": tok,
        "tmp": tmp_path,
    }


def create(e: dict[str, Path], out: Path, *extra: str | Path) -> subprocess.CompletedProcess[str]:
    return run(
        "bundle", "create", out, "--stream", "main", "--sequence", "3", "--key", e["key"],
        *extra, f"model@1.0={e['model']}", f"tok@2={e['tok']}",
    )  # fmt: skip


def test_create_and_inspect_directory(env: dict[str, Path]) -> None:
    out = env["tmp"] / "b"
    doc = ok_json(
        create(env, out, "--any-site", "--part-size", "1000", "--media-type",
               "tok=application/json", "--json")
    )  # fmt: skip
    assert doc["format"] == "directory" and doc["sequence"] == 3 and doc["any_site"] is True
    arts = {a["name"]: a for a in doc["artifacts"]}
    assert arts["model"]["parts"] == 3 and arts["tok"]["media_type"] == "application/json"
    assert arts["model"]["blake3"] == hash_path(env["model"])[0]
    assert arts["model"]["release"] == 3
    assert len(doc["signers"]) == 1

    plain = run("bundle", "inspect", out, "--json")
    shown = ok_json(plain)
    assert shown["verified"] is False and shown["signers"] == []
    assert shown["signatures"][0] == {
        "keyid": doc["signers"][0],
        "label": None,  # no home given: no signed trust to name the key
        "known": False,
        "verified": False,
    }
    assert "NOT VERIFIED" in plain.stderr

    checked = ok_json(run("bundle", "inspect", out, "--key", env["pub"], "--verify", "--json"))
    assert checked["verified"] is True and checked["artifacts_verified"] is True
    assert checked["signers"] == doc["signers"]
    assert checked["artifacts"] == doc["artifacts"]


def test_create_tar_with_sites_and_human_output(env: dict[str, Path]) -> None:
    out = env["tmp"] / "b.tar"
    proc = create(env, out, "--site", "site-a", "--site", "site-b", "--tar", "--expires", "2d")
    assert proc.returncode == 0, proc.stderr
    assert "model" in proc.stdout and "blake3:" in proc.stdout
    assert tarfile.is_tarfile(out)
    shown = run("bundle", "inspect", out, "--key", env["pub"], "--verify")
    assert shown.returncode == 0, shown.stderr
    assert "site-a, site-b" in shown.stdout and "verified" in shown.stdout
    assert "NOT VERIFIED" not in shown.stdout + shown.stderr
    doc = ok_json(run("bundle", "inspect", out, "--json"))
    assert doc["format"] == "tar" and doc["sites"] == ["site-a", "site-b"]


def test_inspect_with_wrong_key_exits_1(env: dict[str, Path]) -> None:
    out = env["tmp"] / "b"
    assert create(env, out, "--any-site").returncode == 0
    refused(run("bundle", "inspect", out, "--key", env["other"]), 1, "unknown_key")
    proc = run("bundle", "inspect", out, "--key", env["other"], "--json")
    doc = json.loads(proc.stdout)
    assert doc["ok"] is False and doc["error"]["code"] == "unknown_key" and doc["exit_code"] == 1


def test_inspect_tampered_payload_exits_1(env: dict[str, Path]) -> None:
    out = env["tmp"] / "b"
    assert create(env, out, "--any-site").returncode == 0
    tamper_payload(out)
    refused(run("bundle", "inspect", out, "--key", env["pub"]), 1, "bad_signature")


def test_inspect_verify_tampered_artifact_exits_1(env: dict[str, Path]) -> None:
    out = env["tmp"] / "b"
    assert create(env, out, "--any-site").returncode == 0
    flip_bit(out / "artifacts" / "model@1.0_model.bin", 100)
    assert run("bundle", "inspect", out, "--key", env["pub"]).returncode == 0
    refused(run("bundle", "inspect", out, "--key", env["pub"], "--verify"), 1, "digest_mismatch")


def test_inspect_verify_endless_data_exits_1(env: dict[str, Path]) -> None:
    out = env["tmp"] / "b"
    assert create(env, out, "--any-site").returncode == 0
    with open(out / "artifacts" / "tok@2_tok.json", "ab") as f:
        f.write(b"x")
    refused(run("bundle", "inspect", out, "--key", env["pub"], "--verify"), 1, "artifact_too_long")


def test_inspect_symlink_member_exits_1(env: dict[str, Path]) -> None:
    out = env["tmp"] / "b"
    assert create(env, out, "--any-site").returncode == 0
    evil = pack_tar(
        env["tmp"] / "evil.tar",
        out,
        extra=[tar_member("artifacts/x", type=tarfile.SYMTYPE, linkname="/etc/shadow")],
    )
    refused(run("bundle", "inspect", evil), 1, "archive_link")


def test_inspect_absent_bundle_exits_3(env: dict[str, Path]) -> None:
    refused(run("bundle", "inspect", env["tmp"] / "absent"), 3, "bundle_not_found")


@pytest.mark.parametrize(
    "extra",
    [
        [],  # neither --site nor --any-site: refuses to guess
        ["--site", "a", "--any-site"],
        ["--any-site", "--part-size", "lots"],
        ["--any-site", "--part-size", "0"],
        ["--any-site", "--expires", "someday"],
        ["--any-site", "--media-type", "nope=text/plain"],
        ["--any-site", "--media-type", "tok=not-a-type"],
        ["--any-site", "--sequence", "x"],
        ["--any-site", "--stream", "bad stream"],
        ["--any-site", "noversion=/x"],
    ],
    ids=[
        "no-site", "site-and-any", "part-size-word", "part-size-zero", "bad-expires",
        "media-type-unknown", "media-type-bad", "sequence-word", "bad-stream", "bad-artifact",
    ],
)  # fmt: skip
def test_create_usage_errors_exit_2(env: dict[str, Path], extra: list[str]) -> None:
    out = env["tmp"] / "b"
    refused(create(env, out, *extra), 2, "usage")
    assert not out.exists()


def test_inspect_verify_needs_key(env: dict[str, Path]) -> None:
    out = env["tmp"] / "b"
    assert create(env, out, "--any-site").returncode == 0
    refused(run("bundle", "inspect", out, "--verify"), 2, "usage")


def test_create_missing_source_exits_3(env: dict[str, Path]) -> None:
    out = env["tmp"] / "b"
    refused(
        run("bundle", "create", out, "--stream", "s", "--sequence", "1", "--key", env["key"],
            "--any-site", f"m@1={env['tmp'] / 'absent'}"),
        3, "file_not_found",
    )  # fmt: skip


def test_create_refuses_existing_output_exits_3(env: dict[str, Path]) -> None:
    out = env["tmp"] / "b"
    out.mkdir()
    (out / "x").write_bytes(b"")
    refused(create(env, out, "--any-site"), 3, "output_exists")


def test_create_with_trust_update(env: dict[str, Path]) -> None:
    from bundles.dsse import sign_envelope

    upd = env["tmp"] / "t.dsse.json"
    upd.write_bytes(sign_envelope("x/trust", b"{}", [PrivateKey.generate()]).to_bytes())
    out = env["tmp"] / "b"
    doc = ok_json(create(env, out, "--any-site", "--trust-update", upd, "--json"))
    assert doc["trust_updates"] == 1
    assert (out / "trust" / "0001.dsse.json").read_bytes() == upd.read_bytes()
    assert ok_json(run("bundle", "inspect", out, "--json"))["trust_updates"] == 1
