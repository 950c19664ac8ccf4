"""One import at a time: the home lock, seen from the real CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conformance.driver import cli_argv, cli_env, error_code, parse_output, staging_files
from import_env import Env

HOLDER = """
import sys
from pathlib import Path
from appliance.home import Home, HomeLock
with HomeLock(Home(Path(sys.argv[1]))):
    print("locked", flush=True)
    sys.stdin.readline()
print("released", flush=True)
"""


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Env:
    return Env(tmp_path_factory.mktemp("lock-template"))


@pytest.fixture
def env(template: Env, tmp_path: Path) -> Env:
    return template.clone(tmp_path / "env")


@contextmanager
def holder(home: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the home lock until its stdin gets a line."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(home)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "locked"  # awaited, not slept for
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def release(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "released"
    assert proc.wait(timeout=30) == 0


def wait_until_it_opened(pid: int, path: Path, proc: subprocess.Popen[str]) -> None:
    """Poll /proc/PID/fd until the process holds ``path`` open (it is then at the lock)."""
    deadline = time.monotonic() + 60
    target = str(path)
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the waiting import exited instead of waiting"
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except FileNotFoundError:
            fds = []
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return
            except OSError:
                continue
        time.sleep(0.01)
    raise AssertionError(f"process {pid} never opened {path}")


def test_import_while_locked_is_lock_held_fast(env: Env) -> None:
    bundle = env.bundle({"m@1": b"weights"})
    before = env.snapshot()
    with holder(env.home):
        t0 = time.monotonic()
        rc, doc = env.run("import", bundle)
        elapsed = time.monotonic() - t0
    assert (rc, error_code(doc)) == (3, "lock_held"), doc
    assert elapsed < 10, f"a held lock took {elapsed:.1f}s to report"
    after = env.snapshot()
    assert after.store_part() == before.store_part()
    assert after.trust == before.trust
    env.import_ok(bundle)  # once released, the same bundle imports


def test_trust_apply_while_locked_is_lock_held(env: Env) -> None:
    from bundles.documents import AddKey

    update = env.trust_update([AddKey(env.new_key("spare").public, "publisher", "x")])
    with holder(env.home):
        rc, doc = env.run("trust", "apply", update)
    assert (rc, error_code(doc)) == (3, "lock_held"), doc
    env.expect_ok("trust", "apply", update)


def test_wait_waits_for_the_lock_then_imports(env: Env) -> None:
    bundle = env.bundle({"m@1": b"weights"})
    with holder(env.home) as lock_holder:
        argv = cli_argv(env.home, "import", "--wait", bundle)
        waiter = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env()
        )
        try:
            wait_until_it_opened(waiter.pid, env.home / "lock", waiter)
            assert waiter.poll() is None  # blocked on the lock, not failed
            assert env.expect_ok("list")["artifacts"] == []
            release(lock_holder)
            out, err = waiter.communicate(timeout=60)
        finally:
            if waiter.poll() is None:
                waiter.kill()
                waiter.wait()
    doc = parse_output(waiter.returncode, out, err, argv)
    assert waiter.returncode == 0 and doc["ok"] is True, doc
    assert [a["name"] for a in env.expect_ok("list")["artifacts"]] == ["m"]


def test_lock_left_by_a_dead_process_does_not_block(env: Env) -> None:
    with holder(env.home) as lock_holder:
        os.kill(lock_holder.pid, signal.SIGKILL)
        assert lock_holder.wait(timeout=30) == -signal.SIGKILL
    lock_file = env.home / "lock"
    assert lock_file.exists()  # the file stays, with the dead holder's pid in it
    assert lock_file.read_text().strip() == str(lock_holder.pid)
    env.import_ok(env.bundle({"m@1": b"weights"}))
    assert staging_files(env.home) == []
