"""Real, separate uids: the service user owns the home, loaders get bytes only through it."""

from __future__ import annotations

import json
import socket

from service_world import MODEL_V1, MODEL_V2, World, ask, free_uid, read_reply

from appliance.errors import ExitCode
from bundles.documents import AllowLoader, DenyLoader


def test_loader_user_gets_signed_bytes_while_a_direct_read_gives_eacces(world: World, users):
    loader = users.make("apld")
    world.apply(AllowLoader(loader.name, "models"))
    world.start()
    # Direct: the home is closed to the loader user (the kernel says EACCES).
    obj = next((world.home / "objects").rglob("*"))
    probe = world.run_as(loader, "--home", str(world.home), "--json", "list")
    assert probe.returncode == ExitCode.OPERATIONAL, probe.stderr
    assert json.loads(probe.stdout)["error"]["code"] == "permission_denied"  # not a traceback
    raw = world.tmp / "probe.py"
    raw.write_text(
        "import errno, os, sys\n"
        "for p in sys.argv[1:]:\n"
        "    try:\n"
        "        os.open(p, os.O_RDONLY)\n"
        "    except PermissionError as e:\n"
        "        assert e.errno == errno.EACCES\n"
        "    else:\n"
        "        raise SystemExit('readable: ' + p)\n"
    )
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, str(raw), str(world.home / "appliance.db"), str(obj)],
        user=loader.uid,
        group=loader.gid,
        extra_groups=[],
        capture_output=True,
    )
    assert r.returncode == 0, r.stderr
    # Through the service: the signed bytes of the active version, on stdout.
    res = world.run_as(loader, "load", "model", "--socket", str(world.sock))
    assert res.returncode == 0, res.stderr
    assert res.stdout == MODEL_V2
    ev = world.events()[-1]
    assert ev["outcome"] == "verified"
    assert ev["detail"]["loader"]["uid"] == loader.uid
    assert ev["detail"]["loader"]["user"] == loader.name
    assert ev["detail"]["loader"]["via"] == "service"
    # The home is still closed: the service did not open it up.
    assert (world.home.stat().st_mode & 0o077) == 0


def test_ungranted_user_is_refused_and_audited_with_its_identity(world: World, users):
    granted, other = users.make("apld"), users.make("apno")
    world.apply(AllowLoader(granted.name, "models"))
    world.start()
    before = len(world.events())
    res = world.run_as(
        other, "--json", "load", "model", "--socket", str(world.sock), "-o", "/dev/null"
    )
    assert res.returncode == ExitCode.REJECTED, res.stderr
    out = json.loads(res.stdout)
    assert out["error"]["code"] == "loader_not_authorized"
    events = world.events()
    assert len(events) == before + 1
    ev = events[-1]
    assert (ev["outcome"], ev["code"], ev["name"]) == ("rejected", "loader_not_authorized", "model")
    assert ev["detail"]["loader"]["uid"] == other.uid
    assert ev["detail"]["loader"]["user"] == other.name
    assert "copy" not in ev["detail"]


def test_deny_loader_takes_effect_on_the_next_request(world: World, users):
    loader = users.make("apld")
    world.apply(AllowLoader(loader.name, "models"))
    world.start()
    assert world.run_as(loader, "load", "model", "--socket", str(world.sock)).returncode == 0
    world.apply(DenyLoader(loader.name))
    res = world.run_as(loader, "load", "model", "--socket", str(world.sock))
    assert res.returncode == ExitCode.REJECTED
    assert "loader_not_authorized" in res.stderr.decode()
    assert res.stdout == b""


def test_a_grant_revoked_while_the_loader_is_connected_refuses_its_request(world: World, users):
    import subprocess
    import sys

    loader = users.make("apld")
    world.apply(AllowLoader(loader.name, "models"))
    world.start()
    # The loader connects first, waits for the revocation, then asks.
    script = world.tmp / "slow.py"
    script.write_text(
        "import json, socket, sys, time\n"
        "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n"
        "sys.stdout.write('connected\\n'); sys.stdout.flush()\n"
        "sys.stdin.readline()\n"
        's.sendall(b\'{"v":1,"op":"load","name":"model"}\\n\')\n'
        "buf = b''\n"
        "while not buf.endswith(b'\\n'):\n"
        "    msg, fds, _, _ = socket.recv_fds(s, 65536, 1)\n"
        "    buf += msg\n"
        "    if not msg: break\n"
        "print(buf.decode().strip())\n"
    )
    p = subprocess.Popen(
        [sys.executable, str(script), str(world.sock)],
        user=loader.uid,
        group=loader.gid,
        extra_groups=[],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert p.stdout is not None and p.stdin is not None
    assert p.stdout.readline() == b"connected\n"
    world.apply(DenyLoader(loader.name))
    out, _ = p.communicate(b"go\n", timeout=30)
    reply = json.loads(out.splitlines()[-1])
    assert reply["ok"] is False
    assert reply["error"]["code"] == "loader_not_authorized"
    assert reply["exit_code"] == 1


def test_a_uid_without_passwd_entry_is_refused_even_with_a_grant_for_a_missing_user(
    world: World,
):
    ghost = "apghost0"
    world.apply(AllowLoader(ghost, "models"))  # a grant for a user this host does not have
    shown = world.run_as(None, "--home", str(world.home), "--json", "trust", "show")
    grants = json.loads(shown.stdout)["loader_grants"]
    assert grants == [
        {
            "loader": ghost,
            "stream": "models",
            "artifacts": [],
            "any_version": False,
            "trust_version": grants[0]["trust_version"],
            "known": False,
        }
    ]
    world.start()
    uid = free_uid()
    res = world.run_as(uid, "load", "model", "--socket", str(world.sock))
    assert res.returncode == ExitCode.REJECTED, res.stderr
    assert (
        b"loader_not_authorized" in res.stderr.encode()
        if isinstance(res.stderr, str)
        else (b"loader_not_authorized" in res.stderr)
    )
    ev = world.events()[-1]
    assert ev["code"] == "loader_not_authorized"
    assert ev["detail"]["loader"]["uid"] == uid
    assert ev["detail"]["loader"]["user"] is None


def test_root_needs_a_grant_like_anyone(world: World):
    world.start()
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(str(world.sock))
    sock.sendall(b'{"v":1,"op":"load","name":"model"}\n')
    reply = read_reply(sock)
    sock.close()
    assert reply.code == "loader_not_authorized" and reply.fds == []
    assert world.events()[-1]["detail"]["loader"]["uid"] == 0
    world.apply(AllowLoader("root", "models"))
    ok = ask(world.sock, "model")
    try:
        assert ok.doc["ok"] is True and len(ok.fds) == 1
        assert open(ok.fds[0], "rb", closefd=False).read() == MODEL_V2
    finally:
        ok.close()


def test_loads_through_the_service_are_the_same_kind_of_object(world: World, users):
    import appliance

    world.apply(AllowLoader("root", "models", ("model",), True))
    world.start()
    with appliance.load("model", socket=world.sock) as art:
        assert isinstance(art, appliance.LoadedArtifact)
        assert (art.name, art.version, art.read()) == ("model", "2", MODEL_V2)
        assert art.sealed and art.record.active
    with appliance.load("model@1", socket=world.sock) as old:  # --any-version
        assert old.read() == MODEL_V1
