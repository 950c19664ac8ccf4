"""The same watcher inside ``appliance serve --watch``: a tampered object gives its alarm
while the service runs, and SIGTERM stops both cleanly."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from conformance.driver import cli_env
from conftest_load import Site

from appliance.store import find, object_path


def test_serve_with_watch_raises_an_alarm_for_a_tampered_object(site: Site, tmp_path: Path) -> None:
    db = site.h.db()
    try:
        obj = object_path(site.h, find(db, "model", "1.0").digest)
    finally:
        db.conn.close()
    sock = tmp_path / "s.sock"
    env = cli_env()
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "--home", str(site.home), "serve", "--watch",
         "--socket", str(sock)],
        stderr=subprocess.PIPE, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert proc.stderr is not None
    try:
        deadline = time.monotonic() + 60
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sock.exists(), "the service did not start"
        time.sleep(1.0)  # the watcher's first full check
        os.chmod(obj, 0o644)  # an attacker makes the object writable
        seen = b""
        deadline = time.monotonic() + 15
        while b"object_modified" not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stderr], [], [], 0.5)
            if ready:
                seen += os.read(proc.stderr.fileno(), 65536)
        assert b"object_modified" in seen, seen.decode(errors="replace")
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
    assert rc == 0, rc
