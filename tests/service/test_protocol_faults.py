"""Bad input and faults at the socket: each refused with its code, the service unharmed.

The service runs here as this test's own user (root in CI), granted
explicitly; the peers are raw sockets speaking (or abusing) docs/PROTOCOL.md.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from service_world import MODEL_V1, MODEL_V2, World, ask, child_env, read_reply

from appliance.errors import ExitCode
from bundles.documents import AllowLoader


@pytest.fixture
def served(root_world: World) -> World:
    root_world.apply(AllowLoader("root", "models"))
    root_world.start()
    return root_world


def _healthy(w: World) -> None:
    r = ask(w.sock, "model")
    try:
        assert r.doc["ok"] is True, r.doc
        assert os.pread(r.fds[0], 1 << 20, 0) == MODEL_V2
    finally:
        r.close()


def _unchanged_but_loads(w: World, before: list[dict]) -> None:
    assert w.events() == before  # refusals of malformed requests are not load events
    audit = w.run_as(None, "--home", str(w.home), "audit", "verify")
    assert audit.returncode == 0, audit.stderr


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"garbage\n", "bad_request"),
        (b"\xff\xfe\n", "bad_request"),
        (b"[1,2]\n", "bad_request"),
        (b'{"v":1,"op":"load","name":"model","extra":1}\n', "bad_request"),
        (b'{"v":2,"op":"load","name":"model"}\n', "bad_request"),
        (b'{"v":1,"op":"delete","name":"model"}\n', "bad_request"),
        (b'{"v":1,"op":"load","name":"../etc"}\n', "bad_request"),
        (b'{"v":1,"op":"load","name":"model","digest":"XYZ"}\n', "bad_request"),
        (b'{"v":1,"op":"load","name":"model"}', "bad_request"),  # no newline, then EOF
        (b"", "bad_request"),  # nothing at all
        (b"x" * 10000, "request_too_large"),
        (b'{"v":1,"op":"load","name":"' + b"a" * 5000 + b'"}\n', "request_too_large"),
    ],
)
def test_malformed_requests_are_refused_with_a_code(served: World, data: bytes, code: str):
    before = served.events()
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    s.connect(str(served.sock))
    if data:
        try:
            s.sendall(data)
        except BrokenPipeError:
            pass
    s.shutdown(socket.SHUT_WR)
    reply = read_reply(s)
    s.close()
    assert reply.doc["ok"] is False and reply.fds == []
    assert reply.code == code
    assert reply.doc["exit_code"] == ExitCode.USAGE
    _unchanged_but_loads(served, before)
    _healthy(served)


def test_a_client_that_sends_nothing_times_out_and_ties_up_nothing(root_world: World):
    root_world.apply(AllowLoader("root", "models"))
    root_world.start()
    idle = []
    for _ in range(100):  # more silent clients than workers
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(root_world.sock))
        idle.append(s)
    t0 = time.monotonic()
    _healthy(root_world)  # served at once, beside the silent ones
    assert time.monotonic() - t0 < 5
    idle[0].settimeout(30)
    reply = read_reply(idle[0])  # the request timeout (5 s) answers the silent ones
    assert reply.code == "request_timeout" and reply.doc["exit_code"] == ExitCode.OPERATIONAL
    for s in idle:
        s.close()


def test_a_client_that_never_reads_does_not_block_others(served: World):
    hogs = []
    for _ in range(50):
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(served.sock))
        s.sendall(b'{"v":1,"op":"load","name":"model"}\n')
        hogs.append(s)  # never read
    t0 = time.monotonic()
    _healthy(served)
    assert time.monotonic() - t0 < 10
    for s in hogs:
        s.close()
    _healthy(served)


def test_disconnect_before_the_reply_is_recorded_and_the_service_carries_on(served: World):
    before = len(served.events())
    for _ in range(20):
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(served.sock))
        s.sendall(b'{"v":1,"op":"load","name":"model"}\n')
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
    time.sleep(1.0)
    _healthy(served)
    loads = served.events()[before:]
    assert len(loads) == 21 and all(e["outcome"] == "verified" for e in loads)
    # A reply that never reached its loader says so (when the kernel told the service).
    for e in served.events("load_undelivered"):
        assert e["code"] == "client_gone" and e["detail"]["loader"]["uid"] == os.getuid()


def test_a_thousand_connections_at_once(served: World):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 4096:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below 4096")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4096), hard))
    before = len(served.events())
    socks = []
    for _ in range(1000):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(120)
        s.connect(str(served.sock))
        socks.append(s)
    for s in socks:
        s.sendall(b'{"v":1,"op":"load","name":"model"}\n')
    ok = 0
    for s in socks:
        r = read_reply(s)
        s.close()
        if r.doc.get("ok"):
            assert os.pread(r.fds[0], 64, 0) == MODEL_V2[:64]
            ok += 1
        else:
            assert r.code == "service_busy", r.doc
        r.close()
    assert ok == 1000
    events = served.events()[before:]
    assert len(events) == 1000 and {e["outcome"] for e in events} == {"verified"}
    assert served.run_as(None, "--home", str(served.home), "audit", "verify").returncode == 0


def test_digest_pin(served: World):
    first = ask(served.sock, "model")
    first.close()
    assert first.doc["ok"] is True
    right = first.doc["artifact"]["digest"]["blake3"]
    ok = ask(served.sock, "model", digest=right)
    assert ok.doc["ok"] is True
    ok.close()
    before = len(served.events())
    bad = ask(served.sock, "model", digest="0" * 64)
    assert bad.code == "digest_pinned" and bad.doc["exit_code"] == ExitCode.REJECTED
    assert bad.fds == []
    ev = served.events()[before:]
    assert [(e["outcome"], e["code"]) for e in ev] == [("rejected", "digest_pinned")]
    # The CLI says the same, through the service and directly.
    res = served.run_as(
        None,
        "--json",
        "load",
        "model",
        "--socket",
        str(served.sock),
        "--digest",
        "0" * 64,
        "-o",
        "/dev/null",
    )
    assert res.returncode == 1 and json.loads(res.stdout)["error"]["code"] == "digest_pinned"
    res = served.run_as(
        None,
        "--home",
        str(served.home),
        "--json",
        "load",
        "model",
        "--digest",
        "0" * 64,
        "-o",
        "/dev/null",
    )
    assert res.returncode == 1 and json.loads(res.stdout)["error"]["code"] == "digest_pinned"
    res = served.run_as(None, "load", "model", "--socket", str(served.sock), "--digest", "zz")
    assert res.returncode == 2


def test_grants_cover_their_stream_artifacts_and_the_active_version_only(root_world: World):
    w = root_world
    w.apply(AllowLoader("root", "other-stream"))
    w.start()
    r = ask(w.sock, "model")
    assert r.code == "loader_not_authorized" and r.doc["exit_code"] == 1 and r.fds == []
    w.apply(AllowLoader("root", "models", ("tokenizer",)))
    assert ask(w.sock, "model").code == "loader_not_authorized"
    tok = ask(w.sock, "tokenizer")
    assert tok.doc["ok"] is True
    tok.close()
    w.apply(AllowLoader("root", "models"))
    old = ask(w.sock, "model", version="1")  # stored, not active, no --any-version
    assert old.code == "loader_not_authorized"
    assert "not active" in old.doc["error"]["message"]
    w.apply(AllowLoader("root", "models", (), True))
    old = ask(w.sock, "model", version="1")
    assert old.doc["ok"] is True and os.pread(old.fds[0], 1 << 20, 0) == MODEL_V1
    old.close()
    assert ask(w.sock, "nothing").code == "not_found"


def test_sigterm_finishes_or_refuses_in_flight_loads_never_half_records(served: World):
    results: list[dict] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            try:
                r = ask(served.sock, "model", timeout=30)
            except OSError:
                return
            results.append(r.doc)
            r.close()

    threads = [threading.Thread(target=hammer, daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    try:
        assert served.stop(signal.SIGTERM) == 0
    finally:
        stop.set()  # also when the assertion fails: no hammer is left running
        for t in threads:
            t.join(60)
    seqs = {e["seq"] for e in served.events() if e["outcome"] == "verified"}
    served_ok = [r for r in results if r.get("ok")]
    assert served_ok, "no load was served before SIGTERM"
    assert all(r["event"] in seqs for r in served_ok)  # every handed-over fd is on record
    assert {r["error"]["code"] for r in results if not r.get("ok")} <= {"service_stopping"}
    assert not served.sock.exists()
    assert served.run_as(None, "--home", str(served.home), "audit", "verify").returncode == 0


def test_sigkill_during_loads_next_start_is_clean_and_the_chain_intact(served: World):
    results: list[dict] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            try:
                r = ask(served.sock, "model", timeout=30)
            except (OSError, ValueError):
                continue
            results.append(r.doc)
            r.close()

    threads = [threading.Thread(target=hammer, daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    try:
        assert served.stop(signal.SIGKILL) == -signal.SIGKILL
    finally:
        stop.set()  # also when the assertion fails: no hammer is left running
        for t in threads:
            t.join(60)
    assert served.sock.exists()  # left behind by the killed service: stale
    audit = served.run_as(None, "--home", str(served.home), "audit", "verify")
    assert audit.returncode == 0, audit.stderr
    seqs = {e["seq"] for e in served.events() if e["outcome"] == "verified"}
    assert all(r["event"] in seqs for r in results if r.get("ok"))
    served.start()  # replaces the stale socket
    _healthy(served)


def test_a_second_service_on_a_live_socket_is_refused(served: World):
    res = served.run_as(
        None, "--home", str(served.home), "--json", "serve", "--socket", str(served.sock)
    )
    assert res.returncode == ExitCode.OPERATIONAL
    assert json.loads(res.stdout)["error"]["code"] == "socket_in_use"
    _healthy(served)


def test_no_service_is_an_operational_error(root_world: World):
    res = root_world.run_as(
        None, "--json", "load", "model", "--socket", str(root_world.sock), "-o", "/dev/null"
    )
    assert res.returncode == ExitCode.OPERATIONAL
    assert json.loads(res.stdout)["error"]["code"] == "service_unavailable"


def test_socket_activation(root_world: World):
    w = root_world
    w.apply(AllowLoader("root", "models"))
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(w.sock))
    listener.listen(16)
    wrapper = (
        "import os, sys\n"
        "fd = int(sys.argv[1]); os.dup2(fd, 3); os.set_inheritable(3, True)\n"
        "os.environ['LISTEN_PID'] = str(os.getpid()); os.environ['LISTEN_FDS'] = '1'\n"
        "os.execv(sys.executable, [sys.executable, '-m', 'appliance', *sys.argv[2:]])\n"
    )
    from service_world import child_env

    p = subprocess.Popen(
        [sys.executable, "-c", wrapper, str(listener.fileno()), "--home", str(w.home), "serve"],
        pass_fds=[listener.fileno()],
        env=child_env(),
        stderr=subprocess.PIPE,
    )
    listener.close()
    try:
        _healthy(w)
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=30) == 0
        assert p.stderr is not None and b"activated socket" in p.stderr.read()
    finally:
        p.kill()
        p.wait()


def test_stopping_removes_its_own_socket_and_keeps_a_successors(served: World):
    """A service stopping removes the socket file it made, and only while its listener is
    still open (so the file's inode number cannot yet be a successor's); a socket someone
    else bound at the path meanwhile stays."""
    served.sock.unlink()
    successor = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        successor.bind(str(served.sock))
        theirs = os.stat(served.sock).st_ino
        assert served.stop(signal.SIGTERM) == 0
        assert os.stat(served.sock).st_ino == theirs
    finally:
        successor.close()
        served.sock.unlink(missing_ok=True)
    served.start()
    assert served.stop(signal.SIGTERM) == 0
    assert not served.sock.exists()


_EARLY_SIGTERM = """
import os, signal, sys
from appliance.service import server
real = server.Server.__init__
def init(self, *a, **k):
    os.kill(os.getpid(), signal.SIGTERM)  # the socket exists; the server is not made yet
    real(self, *a, **k)
server.Server.__init__ = init
from appliance.cli.main import main
sys.exit(main(["--home", HOME, "serve", "--socket", SOCK]))
"""


def test_a_sigterm_as_soon_as_the_socket_exists_stops_the_service_cleanly(
    root_world: World,
) -> None:
    """A supervisor that signals as soon as it sees the socket (before the server has
    opened its databases) gets a clean stop: exit 0 and the socket file removed, not a
    process ended by the signal's default action with its socket left behind."""
    script = f"HOME = {str(root_world.home)!r}\nSOCK = {str(root_world.sock)!r}\n"
    p = subprocess.run(
        [sys.executable, "-c", script + _EARLY_SIGTERM],
        env=child_env(),
        cwd=root_world.tmp,
        capture_output=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    assert not root_world.sock.exists()
