"""Fixtures for the loader-service tests: real users, a real Unix socket, a real service.

``World`` is a signed site (``tests/conftest_load.make_site``) whose home is
given to a throwaway service user (``useradd`` here, ``userdel`` after), with
``appliance serve`` running as that user in a subprocess. Loader processes
run as other throwaway users (``subprocess`` with ``user=``), so the
service's ``SO_PEERCRED`` sees real, separate uids. These tests need root
(CI runs as root); without it they are skipped with a clear reason.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conformance.driver import apply_trust, cli_env, run_appliance
from conftest_load import Site, make_site

from appliance.home import Home
from appliance.service.ownership import give_home_to

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create users")
MODEL_V1 = b"model weights v1\n" * 8
MODEL_V2 = b"model weights v2\n" * 8


CHILD = {"HOME": "/", "PYTHONDONTWRITEBYTECODE": "1"}  # what a service child sees besides


def child_env(**extra: str) -> dict[str, str]:
    return cli_env({**CHILD, **extra})


@dataclass
class User:
    name: str
    uid: int
    gid: int


class Users:
    """Throwaway system users, removed at the end of the test."""

    def __init__(self) -> None:
        self.made: list[str] = []

    def make(self, prefix: str) -> User:
        name = f"{prefix}{secrets.token_hex(3)}"
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            check=True,
            capture_output=True,
        )
        self.made.append(name)
        pw = pwd.getpwnam(name)
        return User(name, pw.pw_uid, pw.pw_gid)

    def remove_all(self) -> None:
        for name in self.made:
            subprocess.run(["userdel", name], capture_output=True)


def free_uid() -> int:
    """A uid with no passwd entry."""
    uid = 61000 + secrets.randbelow(3000)
    while True:
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid
        uid += 1


@dataclass
class Reply:
    doc: dict[str, Any]
    fds: list[int] = field(default_factory=list)

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)

    @property
    def code(self) -> str | None:
        err = self.doc.get("error")
        return err.get("code") if isinstance(err, dict) else None


def ask_raw(sock: Path, data: bytes, *, timeout: float = 30.0) -> Reply:
    """Send raw bytes, read one reply line (and its descriptors)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(str(sock))
    try:
        if data:
            s.sendall(data)
        return read_reply(s)
    finally:
        s.close()


def read_reply(s: socket.socket) -> Reply:
    buf = b""
    fds: list[int] = []
    while not buf.endswith(b"\n"):
        msg, got, _, _ = socket.recv_fds(s, 65536, 4)
        fds += got
        if not msg:
            break
        buf += msg
    return Reply(json.loads(buf) if buf else {}, fds)


def ask(sock: Path, name: str, *, timeout: float = 30.0, **fields: Any) -> Reply:
    req = {"v": 1, "op": "load", "name": name, **fields}
    return ask_raw(sock, json.dumps(req).encode() + b"\n", timeout=timeout)


def wait_for_socket(sock: Path, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise AssertionError(f"serve exited {proc.returncode}: {err}")
        if sock.exists():
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(str(sock))
                return
            except OSError:
                pass
            finally:
                s.close()
        time.sleep(0.05)
    raise AssertionError(f"no service on {sock}")


@dataclass
class World:
    tmp: Path
    site: Site
    sock: Path
    svc: User | None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def home(self) -> Path:
        return self.site.home

    def apply(self, *ops: Any) -> None:
        """Apply a root-signed trust update holding ``ops`` (as root, like an operator)."""
        apply_trust(self.home, self.site.trust_update(*ops))

    def ship(self, artifacts: dict[str, bytes]) -> None:
        self.site.ship(artifacts)

    def start(self, *extra: str) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "appliance", "--home", str(self.home), "serve"]
        cmd += ["--socket", str(self.sock), *extra]
        kw: dict[str, Any] = {}
        if self.svc is not None:
            kw = {"user": self.svc.uid, "group": self.svc.gid, "extra_groups": []}
        self.proc = subprocess.Popen(
            cmd, env=child_env(), cwd=self.tmp, stderr=subprocess.PIPE, **kw
        )
        wait_for_socket(self.sock, self.proc)
        return self.proc

    def serving_root(self) -> Path:
        """Root may load ``models``; the service started and warmed by one load (its cache
        and its connection open); the state database's path, for a test to tamper with."""
        from bundles.documents import AllowLoader

        self.apply(AllowLoader("root", "models"))
        self.start()
        ask(self.sock, "model").close()
        return self.home / "appliance.db"

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=60)
        self.proc = None
        return code

    def run_as(
        self, user: User | int | None, *args: str, stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        """``python -m appliance ARGS`` as ``user`` (a User, a bare uid, or None: root)."""
        kw: dict[str, Any] = {}
        if isinstance(user, User):
            kw = {"user": user.uid, "group": user.gid, "extra_groups": []}
        elif isinstance(user, int):
            kw = {"user": user, "group": user, "extra_groups": []}
        return run_appliance(*args, env=CHILD, cwd=self.tmp, input=stdin, timeout=120, **kw)

    def events(self, type: str = "load") -> list[dict[str, Any]]:
        db = Home(self.home).db()
        try:
            rows = db.execute(
                "SELECT seq, outcome, code, name, version, detail FROM audit WHERE type = ? "
                "ORDER BY seq",
                [type],
            ).fetchall()
        finally:
            db.conn.close()
        keys = ("seq", "outcome", "code", "name", "version", "detail")
        return [{**dict(zip(keys, r, strict=True)), "detail": json.loads(r[5])} for r in rows]


def make_world(tmp: Path, svc: User | None) -> World:
    os.chmod(tmp, 0o755)
    site = make_site(tmp)
    site.ship({"model@1": MODEL_V1, "tokenizer@1": b"tok"})
    site.ship({"model@2": MODEL_V2})
    run = tmp / "run"
    run.mkdir(mode=0o755)
    if svc is not None:
        give_home_to(Home(site.home), svc.name)
        os.chown(run, svc.uid, svc.gid)
    return World(tmp, site, run / "appliance.sock", svc)
