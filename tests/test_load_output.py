"""``load -o``: regular files are replaced atomically; devices are written, never replaced."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

from import_env import Env


def test_load_to_dev_null_keeps_the_device(tmp_path: Path) -> None:
    env = Env(tmp_path / "site")
    env.import_ok(env.bundle({"model@1": b"x" * 5000}, sequence=1))
    env.expect_ok("load", "model", "-o", "/dev/null")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_load_to_fifo_streams_verified_bytes(tmp_path: Path) -> None:
    env = Env(tmp_path / "site")
    data = os.urandom(200_000)
    env.import_ok(env.bundle({"model@1": data}, sequence=1))
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    env.expect_ok("load", "model", "-o", fifo)
    reader.join(timeout=60)
    assert got == [data]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_load_to_regular_file_replaces_it(tmp_path: Path) -> None:
    env = Env(tmp_path / "site")
    env.import_ok(env.bundle({"model@1": b"signed"}, sequence=1))
    out = tmp_path / "out.bin"
    out.write_bytes(b"old contents that are longer")
    env.expect_ok("load", "model", "-o", out)
    assert out.read_bytes() == b"signed"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.bin")]


def test_load_to_dev_stdout_writes_only_the_bytes(tmp_path: Path) -> None:
    """``-o /dev/stdout`` into a pipe: stdout holds the verified bytes and nothing else
    (the status line goes to stderr); with ``--json`` it is a usage error (stdout carries
    the JSON), refused before anything is loaded."""
    from conftest_load import make_site

    site = make_site(tmp_path)
    data = os.urandom(70_000)
    site.ship({"model@1.0": data})
    res = site.cli("load", "model", "-o", "/dev/stdout", check=0)
    assert res.stdout == data
    assert "verified model@1.0" in res.stderr
    events = site.cli("audit", "show", "--json", check=0).json["events"]
    refused = site.cli("--json", "load", "model", "-o", "/dev/stdout", check=2)
    assert refused.json["error"]["code"] == "usage"
    assert "is stdout, which carries the JSON" in refused.json["error"]["message"]
    assert site.cli("audit", "show", "--json", check=0).json["events"] == events
