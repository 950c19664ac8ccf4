"""Many loaders at once beside imports and rollbacks; the evidence cache counts its work."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

import pytest
from service_world import MODEL_V2, World, ask

from appliance.home import Home
from appliance.service.server import Config, Server, bind_socket
from bundles.documents import AllowLoader, RevokeKey


def test_64_loaders_beside_imports_and_a_rollback_lose_no_event(root_world: World):
    w = root_world
    w.apply(AllowLoader("root", "models", (), True))
    w.start()
    before = len(w.events())
    served: list[int] = []
    errors: list[dict] = []
    lock = threading.Lock()

    def loader() -> None:
        for _ in range(15):
            r = ask(w.sock, "model", timeout=120)
            with lock:
                if r.doc.get("ok"):
                    served.append(r.doc["event"])
                else:
                    errors.append(r.doc)
            r.close()

    threads = [threading.Thread(target=loader, daemon=True) for _ in range(64)]
    for t in threads:
        t.start()
    # Other processes change the store meanwhile: an import and a rollback.
    bundle = w.site.bundle({"model@3": b"v3", "extra@1": b"x"})
    imp = w.run_as(None, "--home", str(w.home), "import", str(bundle))
    auth = w.tmp / "rb.json"
    made = w.run_as(
        None,
        "rollback",
        "authorize",
        str(auth),
        "model",
        "--to",
        "2",
        "--key",
        str(w.site.keydir / "rollback.key"),
        "--reason",
        "test",
    )
    rb = w.run_as(None, "--home", str(w.home), "rollback", "model", "--authorization", str(auth))
    for t in threads:
        t.join()
    assert imp.returncode == 0, imp.stderr
    assert made.returncode == 0, made.stderr
    assert rb.returncode == 0, rb.stderr
    assert errors == []
    assert len(served) == 64 * 15 and len(set(served)) == len(served)
    events = [e for e in w.events()[before:] if e["outcome"] == "verified"]
    assert {e["seq"] for e in events} == set(served)  # each handed-over fd has its event
    assert w.run_as(None, "--home", str(w.home), "audit", "verify").returncode == 0


def test_manifest_evidence_is_verified_once_per_change_not_once_per_load(root_world: World):
    w = root_world
    w.apply(AllowLoader("root", "models"))
    sock = w.tmp / "inproc.sock"
    server = Server(Config(Home(w.home)), [bind_socket(sock)])
    t = threading.Thread(target=server.serve, daemon=True)
    t.start()
    try:
        for _ in range(30):
            r = ask(sock, "model")
            assert r.doc["ok"] and os.pread(r.fds[0], 1 << 20, 0) == MODEL_V2
            r.close()
        assert server.cache.verifications == 1
        assert server.cache.trust_loads == 1
        # Another process changes the stored evidence: the next load re-verifies, once.
        w.ship({"model@3": b"three"})
        for _ in range(10):
            ask(sock, "model").close()
        assert server.cache.verifications == 2
        assert server.cache.trust_loads == 2
        # Today's trust is re-checked: a revocation refuses the very next load.
        w.apply(RevokeKey(w.site.publisher.keyid))
        r = ask(sock, "model")
        assert r.code == "revoked_key" and r.doc["exit_code"] == 1 and r.fds == []
    finally:
        server.stop()
        t.join()


def test_every_load_still_rehashes_the_bytes(root_world: World):
    w = root_world
    w.apply(AllowLoader("root", "models"))
    w.start()
    ask(w.sock, "model").close()  # warm the cache
    obj = next(
        p
        for p in (Path(w.home) / "objects").rglob("*")
        if p.is_file() and p.read_bytes() == MODEL_V2
    )
    os.chmod(obj, 0o644)
    obj.write_bytes(MODEL_V2[:-1] + b"X")  # a writer in the store, same size
    r = ask(w.sock, "model")
    assert r.code == "object_tampered" and r.doc["exit_code"] == 4 and r.fds == []
    assert w.events()[-1]["code"] == "object_tampered"


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE artifacts SET signers = '[]' WHERE name = 'model'",
        "UPDATE artifacts SET media_type = 'application/x-pickle' WHERE name = 'model'",
    ],
    ids=["signers", "media_type"],
)
def test_a_record_edited_under_a_warm_cache_is_refused(root_world: World, statement: str):
    """The record a loader is handed is held to the evidence after any change, cache warm
    or not: a writer of the database edits a field the reply carries."""
    w = root_world
    w.apply(AllowLoader("root", "models"))
    w.start()
    ask(w.sock, "model").close()  # warm the cache
    conn = sqlite3.connect(Path(w.home) / "appliance.db")
    with conn:
        conn.execute(statement)
    conn.close()
    r = ask(w.sock, "model")
    assert r.code == "record_unauthorized" and r.doc["exit_code"] == 4 and r.fds == []
    assert w.events()[-1]["code"] == "record_unauthorized"


def test_background_component_starts_and_stops_with_the_service(root_world: World):
    w = root_world
    ran = threading.Event()
    stopped = threading.Event()

    def watcher(stop: threading.Event) -> None:
        ran.set()
        stop.wait()
        stopped.set()

    sock = w.tmp / "bg.sock"
    server = Server(Config(Home(w.home), background=watcher), [bind_socket(sock)])
    t = threading.Thread(target=server.serve, daemon=True)
    t.start()
    assert ran.wait(10)
    server.stop()
    t.join(30)
    assert stopped.is_set() and not t.is_alive()


def test_a_failing_background_component_stops_the_service_fail_closed(root_world: World):
    w = root_world

    def broken(stop: threading.Event) -> None:
        raise RuntimeError("watcher died")

    sock = w.tmp / "bg2.sock"
    logs: list[str] = []
    server = Server(Config(Home(w.home), background=broken, log=logs.append), [bind_socket(sock)])
    assert server.serve() == 3
    assert any("watcher died" in line for line in logs)
