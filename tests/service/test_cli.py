"""The CLI side: load/exec through the service, refusal status, terminals, pipes, grants, init."""

from __future__ import annotations

import json
import os
import pty
import stat
import subprocess
import sys

from service_world import MODEL_V2, World, child_env

from appliance.errors import ExitCode
from bundles.documents import AllowLoader, TrustUpdate
from bundles.errors import ManifestFormatError


def _cli(w: World, *args: str, env: dict[str, str] | None = None, **kw):
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args],
        env=env or child_env(),
        cwd=w.tmp,
        capture_output=True,
        timeout=120,
        **kw,
    )


def test_exec_through_the_service_and_refusal_status(root_world: World):
    w = root_world
    w.apply(AllowLoader("root", "models"))
    w.start()
    env = child_env(APPLIANCE_SOCKET=str(w.sock))
    res = _cli(w, "exec", "model", "--", "cat", "{}", env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout == MODEL_V2
    res = _cli(
        w,
        "exec",
        "model",
        "--",
        sys.executable,
        "-c",
        "import os,sys; sys.stdout.buffer.write(os.read(int(os.environ['APPLIANCE_FD']), 999))",
        env=env,
    )
    assert res.stdout == MODEL_V2  # the inherited descriptor reads from the start
    # exec's own refusals: 1 normally, N with --refusal-status N; the command never runs.
    marker = w.tmp / "ran"
    cmd = ["--", "touch", str(marker)]
    res = _cli(w, "--json", "exec", "tokenizer@9", *cmd, env=env)
    assert res.returncode == ExitCode.USAGE and not marker.exists()
    res = _cli(w, "exec", "model", "--digest", "0" * 64, *cmd, env=env)
    assert res.returncode == 1 and not marker.exists()
    res = _cli(
        w, "--json", "exec", "model", "--digest", "0" * 64, "--refusal-status", "125", *cmd, env=env
    )
    assert res.returncode == 125 and not marker.exists()
    out = json.loads(res.stdout)
    assert out["error"]["code"] == "digest_pinned" and out["exit_code"] == 125
    # The command's own status passes through untouched.
    res = _cli(w, "exec", "model", "--refusal-status", "125", "--", "sh", "-c", "exit 7", env=env)
    assert res.returncode == 7
    res = _cli(w, "exec", "model", "--refusal-status", "0", "--", "true", env=env)
    assert res.returncode == ExitCode.USAGE


def test_load_refuses_a_terminal_as_stdout(root_world: World):
    w = root_world
    master, slave = pty.openpty()
    try:
        p = subprocess.run(
            [sys.executable, "-m", "appliance", "--home", str(w.home), "load", "model"],
            env=child_env(),
            stdout=slave,
            stderr=subprocess.PIPE,
            timeout=60,
        )
    finally:
        os.close(slave)
        os.close(master)
    assert p.returncode == ExitCode.USAGE
    assert b"[stdout_is_terminal]" in p.stderr
    assert w.events() == []  # refused before anything was loaded or recorded


def test_load_into_a_pipe_closed_early_ends_quietly(root_world: World):
    w = root_world
    big = os.urandom(8 << 20)
    w.ship({"big@1": big})
    p = subprocess.run(
        f"{sys.executable} -m appliance --home {w.home} load big | head -c 10 >/dev/null;"
        " echo ${PIPESTATUS[0]}",
        shell=True,
        executable="/bin/bash",
        env=child_env(),
        capture_output=True,
        timeout=60,
    )
    assert p.stdout.strip() == b"0", p.stderr
    assert b"internal_error" not in p.stderr and b"Traceback" not in p.stderr


def test_trust_update_grant_flags(root_world: World):
    w = root_world
    out = w.tmp / "grant.json"
    key = str(w.site.keydir / "root.key")
    ok = _cli(
        w,
        "--json",
        "trust",
        "update",
        str(out),
        "--version",
        "9",
        "--key",
        key,
        "--allow-loader",
        "alice",
        "--stream",
        "models",
        "--artifact",
        "model",
        "--artifact",
        "tokenizer",
        "--any-version",
        "--allow-loader",
        "unit:inference.service",
        "--stream",
        "models",
        "--deny-loader",
        "bob",
    )
    assert ok.returncode == 0, ok.stderr
    ops = json.loads(ok.stdout)["operations"]
    assert ops == [
        {
            "op": "allow_loader",
            "loader": "alice",
            "stream": "models",
            "artifacts": ["model", "tokenizer"],
            "any_version": True,
        },
        {
            "op": "allow_loader",
            "loader": "unit:inference.service",
            "stream": "models",
            "artifacts": [],
            "any_version": False,
        },
        {"op": "deny_loader", "loader": "bob"},
    ]
    for bad in (
        ["--allow-loader", "alice"],  # no stream
        ["--artifact", "model"],  # not after --allow-loader
        ["--any-version"],
        ["--allow-loader", "Not A User", "--stream", "models"],
        ["--allow-loader", "unit:x.socket", "--stream", "models"],
        ["--deny-loader", "../x"],
    ):
        res = _cli(
            w,
            "--json",
            "trust",
            "update",
            str(w.tmp / "x.json"),
            "--version",
            "9",
            "--key",
            key,
            *bad,
        )
        assert res.returncode == ExitCode.USAGE, (bad, res.stdout)
        assert not (w.tmp / "x.json").exists()


def test_malformed_grant_ops_in_a_signed_update_are_refused():
    import pytest

    base = {"type": "appliance/trust-update/v1", "version": 2, "issued_at": "2026-01-01T00:00:00Z"}
    for op in (
        {"op": "allow_loader", "loader": "alice", "stream": "models", "artifacts": []},
        {
            "op": "allow_loader",
            "loader": "al ice",
            "stream": "models",
            "artifacts": [],
            "any_version": False,
        },
        {
            "op": "allow_loader",
            "loader": "alice",
            "stream": "models",
            "artifacts": "model",
            "any_version": False,
        },
        {
            "op": "allow_loader",
            "loader": "alice",
            "stream": "models",
            "artifacts": [],
            "any_version": "yes",
        },
        {"op": "deny_loader", "loader": "unit:a.timer"},
    ):
        with pytest.raises(ManifestFormatError):
            TrustUpdate.from_payload(json.dumps({**base, "operations": [op]}).encode())


def test_init_service_user_closes_the_home(root_world: World, users):
    svc = users.make("apsvc")
    home = w_home = root_world.tmp / "svc-home"
    pub = str(root_world.site.keydir / "root.pub")
    res = _cli(
        root_world,
        "--home",
        str(home),
        "--json",
        "init",
        "--root-key",
        pub,
        "--service-user",
        svc.name,
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["service_user"]["uid"] == svc.uid
    for p in [w_home, *w_home.rglob("*")]:
        st = p.lstat()
        assert st.st_uid == svc.uid, p
        assert st.st_mode & 0o077 == 0 or (stat.S_ISREG(st.st_mode) and "objects" in p.parts), p
    # An unknown user is refused before anything is made.
    other = root_world.tmp / "other-home"
    res = _cli(
        root_world,
        "--home",
        str(other),
        "--json",
        "init",
        "--root-key",
        pub,
        "--service-user",
        "apnosuchuser",
    )
    assert res.returncode == ExitCode.USAGE
    assert json.loads(res.stdout)["error"]["code"] == "unknown_user"
    assert not other.exists()


def test_history_says_who_loaded(root_world: World):
    w = root_world
    w.apply(AllowLoader("root", "models"))
    assert _cli(w, "--home", str(w.home), "load", "model", "-o", "/dev/null").returncode == 0
    w.start()
    env = child_env(APPLIANCE_SOCKET=str(w.sock))
    assert _cli(w, "load", "model", "-o", "/dev/null", env=env).returncode == 0
    text = _cli(w, "--home", str(w.home), "history", "model").stdout.decode()
    assert "by root (uid 0" in text and "direct)" in text and "service)" in text
    hist = json.loads(_cli(w, "--home", str(w.home), "--json", "history", "model").stdout)
    loads = [e for e in hist["events"] if e["type"] == "load"]
    assert [e["loader"]["via"] for e in loads] == ["direct", "service"]
    assert {e["loader"]["uid"] for e in loads} == {0}
    assert all(e["loader"]["pid"] > 0 for e in loads)
