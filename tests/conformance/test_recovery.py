"""Recovery and forensics, through the CLI (issue 14).

* A compromised publisher key signs sequence 2^53-1 with ``issued_at`` in the
  year 9999: it freezes only its own stream, and root undoes it
  (``--reset-stream``, ``--reset-time``, ``--revoke``).
* A copied home (``cp -a``) never advances the original's witness and is
  examined with ``--read-only``, which writes nothing at all.
* ``history --at`` / ``list --at`` answer what was active when.
* An authorized rollback stays valid evidence after the rollback threshold rises.
* ``rollback authorize --from``: valid only while that version is active.
* A committed change whose witness write fails is reported done, with a warning.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bundles.documents import ResetStream, ResetTime, RevokeKey, SetThreshold
from bundles.timeutil import format_time, utcnow

from .driver import M1, M2, Site, cli, copy_home, ok

FAR = datetime(9999, 1, 1, tzinfo=UTC)


def _tree_digest(path: Path) -> str:
    h = hashlib.sha256()
    for dirpath, dirs, files in sorted(os.walk(path)):
        dirs.sort()
        for name in sorted(files):
            p = Path(dirpath) / name
            st = p.lstat()
            h.update(f"{p.relative_to(path)}:{st.st_size}:{st.st_mtime_ns}:{st.st_mode}".encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_compromised_publisher_freezes_only_its_stream_and_root_recovers(
    site: Site, home: Path
) -> None:
    repo = site.repo
    huge = 2**53 - 1
    evil = repo.bundle(
        {"m@6.6": b"evil" * 64},
        sequence=huge,
        signers=("pub2",),
        issued_at=FAR - timedelta(days=30),
        expires=FAR,
    )
    ok(cli(home, "import", evil.path))  # a valid signature by a (compromised) publisher

    # the stream is frozen: a genuine next bundle is refused (its stream's floor is 9998) ...
    nxt = repo.bundle({"m@3.0": M2 + b"3"}, sequence=3)
    r = cli(home, "import", nxt.path)
    assert (r.rc, r.code) == (1, "expired"), str(r)
    # ... but no other stream is: its floor is untouched by another stream's issued_at
    other = repo.bundle({"o@2.0": b"o2" * 64}, stream="other", sequence=2, signers=("other",))
    ok(cli(home, "import", other.path))
    # and neither are rollback authorizations
    auth = repo.write(repo.rollback_auth("o", "1.0"), "rb")
    ok(cli(home, "rollback", "o", "--authorization", auth))

    # root revokes the key and resets the stream and the time floor: one trust update
    v4 = repo.trust_update(
        4,
        [
            RevokeKey(repo.key("pub2").keyid),
            ResetStream("models", 2),
            ResetTime(utcnow() - timedelta(hours=1)),
        ],
    )
    ok(cli(home, "trust", "apply", repo.write(v4, "trust")))
    shown = ok(cli(home, "trust", "show"))
    assert shown["streams"]["models"] == 2
    assert "models" not in shown["time_floors"]["streams"]
    ok(cli(home, "import", nxt.path))  # the genuine sequence 3 now imports
    expiring = repo.bundle({"m@4.0": M2 + b"4"}, sequence=4, expires=utcnow() + timedelta(hours=2))
    ok(cli(home, "import", expiring.path))  # not "expired" against year 9999 any more


def test_far_future_rollback_authorization_does_not_freeze_publishers(
    site: Site, home: Path
) -> None:
    repo = site.repo
    auth = repo.rollback_auth("m", "1.0", issued_at=FAR - timedelta(days=1), expires=FAR)
    ok(cli(home, "rollback", "m", "--authorization", repo.write(auth, "rb")))
    b = repo.bundle({"m@3.0": M2 + b"3"}, sequence=3, expires=utcnow() + timedelta(hours=1))
    ok(cli(home, "import", b.path))


def test_copied_home_never_touches_the_original_witness(wsite: Site, tmp_path: Path) -> None:
    assert wsite.witness is not None
    w = tmp_path / "witness.json"
    live = copy_home(wsite.home, tmp_path / "live", witness_src=wsite.witness, witness_dst=w)
    ok(cli(live, "load", "m", "-o", tmp_path / "o1"))
    copy = tmp_path / "forensic"
    subprocess.run(["cp", "-a", str(live), str(copy)], check=True)
    witness_before = w.read_bytes()

    # used as it is, the copy finds no anchor of its own: refused, nothing written
    r = cli(copy, "load", "m", "-o", tmp_path / "o2")
    assert (r.rc, r.code) == (4, "anchor_missing"), str(r)
    # given the original's anchor, it is refused unless read-only
    from appliance.anchor import anchor_path

    anchor = anchor_path(live)
    r = cli(copy, "--anchor", anchor, "load", "m", "-o", tmp_path / "o2")
    assert (r.rc, r.code) == (4, "anchor_mismatch"), str(r)
    assert w.read_bytes() == witness_before

    # read-only: list, history, verify, audit, load, trust show work and write nothing
    copy_digest = _tree_digest(copy)
    for args in (
        ["list"],
        ["history", "m"],
        ["verify"],
        ["audit", "verify"],
        ["audit", "show"],
        ["trust", "show"],
        ["load", "m", "-o", tmp_path / "o3"],
    ):
        ok(cli(copy, "--read-only", "--anchor", anchor, *args))
    assert (tmp_path / "o3").read_bytes() == M2
    assert _tree_digest(copy) == copy_digest, "the copy changed under --read-only"
    assert w.read_bytes() == witness_before, "the original's witness changed"
    r = cli(copy, "--read-only", "--anchor", anchor, "import", wsite.bundles["models1"].path)
    assert (r.rc, r.code) == (2, "read_only_mode"), str(r)
    # the live home is not disturbed by any of it
    ok(cli(live, "load", "m", "-o", tmp_path / "o4"))


def test_history_and_list_at_a_time(site: Site, home: Path) -> None:
    repo = site.repo
    time.sleep(1.1)
    t_before = format_time(utcnow())
    time.sleep(1.1)
    ok(cli(home, "rollback", "m", "--authorization", repo.write(repo.rollback_auth("m", "1.0"))))
    time.sleep(1.1)
    t_after = format_time(utcnow())
    then = ok(cli(home, "history", "m", "--at", t_before))
    assert then["active"] == "2.0"
    assert all(e["type"] != "rollback" for e in then["events"])
    now = ok(cli(home, "history", "m", "--at", t_after))
    assert now["active"] == "1.0"
    listing = ok(cli(home, "list", "--at", t_before))["artifacts"]
    assert {(a["name"], a["version"]) for a in listing if a["active"]} >= {("m", "2.0")}
    listing = ok(cli(home, "list", "--at", t_after))["artifacts"]
    assert ("m", "1.0") in {(a["name"], a["version"]) for a in listing if a["active"]}
    early = ok(cli(home, "list", "--at", "2000-01-01T00:00:00Z"))["artifacts"]
    assert early == []
    r = cli(home, "history", "m", "--at", "yesterday")
    assert (r.rc, r.code) == (2, "usage"), str(r)


def test_list_at_a_time_reads_the_log_not_the_imported_at_column(site: Site, home: Path) -> None:
    """An attacker who writes the database moves a record's ``imported_at`` into the future
    (to hide it from a responder's ``list --at``) or back to 2000 (to make it look old):
    ``list --at`` and ``history --at`` answer from the hash-chained log all the same."""
    t_now = format_time(utcnow())
    before_list = ok(cli(home, "list", "--at", t_now))["artifacts"]
    before_history = ok(cli(home, "history", "m", "--at", t_now))
    assert ("m", "2.0") in {(a["name"], a["version"]) for a in before_list}
    conn = sqlite3.connect(home / "appliance.db")
    with conn:
        conn.execute("UPDATE artifacts SET imported_at = '2999-01-01T00:00:00Z' WHERE name = 'm'")
        conn.execute("UPDATE artifacts SET imported_at = '2000-01-01T00:00:00Z' WHERE name != 'm'")
    conn.close()
    after_list = ok(cli(home, "list", "--at", t_now))["artifacts"]
    key = [(a["name"], a["version"], a["active"]) for a in before_list]
    assert [(a["name"], a["version"], a["active"]) for a in after_list] == key
    after_history = ok(cli(home, "history", "m", "--at", t_now))
    assert [v["version"] for v in after_history["versions"]] == [
        v["version"] for v in before_history["versions"]
    ]
    assert ok(cli(home, "list", "--at", "2000-06-01T00:00:00Z"))["artifacts"] == []


def test_history_marks_events_after_a_break_as_unverified(site: Site, home: Path) -> None:
    conn = sqlite3.connect(home / "appliance.db")
    with conn:
        seq = conn.execute(
            "SELECT seq FROM audit WHERE name = 'm' AND type = 'import' ORDER BY seq LIMIT 1"
        ).fetchone()[0]
        conn.execute("UPDATE audit SET ts = '2001-01-01T00:00:00Z' WHERE seq = ?", [seq])
    conn.close()
    hist = ok(cli(home, "history", "m"))
    assert hist["unvouched_from"] == seq
    assert [e["verified"] for e in hist["events"]] == [e["seq"] < seq for e in hist["events"]]


def test_rollback_stays_valid_after_the_threshold_rises(
    site: Site, home: Path, tmp_path: Path
) -> None:
    repo = site.repo
    ok(cli(home, "rollback", "m", "--authorization", repo.write(repo.rollback_auth("m", "1.0"))))
    v4 = repo.trust_update(4, [SetThreshold("rollback", None, 2)])
    ok(cli(home, "trust", "apply", repo.write(v4, "trust")))
    ok(cli(home, "load", "m", "-o", tmp_path / "o"))
    assert (tmp_path / "o").read_bytes() == M1
    ok(cli(home, "verify"))
    # the next rollback needs the new threshold
    r = cli(home, "rollback", "m", "--authorization", repo.write(repo.rollback_auth("m", "2.0")))
    assert (r.rc, r.code) == (1, "threshold_not_met"), str(r)


def test_authorization_from_version(site: Site, home: Path) -> None:
    repo = site.repo
    out = home.parent / "rb-from.json"
    ok(
        cli(
            home, "rollback", "authorize", out, "m", "--to", "1.0", "--from", "1.4",
            "--key", repo.keydir / "rb.key",
        )
    )  # fmt: skip
    r = cli(home, "rollback", "m", "--authorization", out)
    assert (r.rc, r.code) == (1, "authorization_mismatch"), str(r)
    out2 = home.parent / "rb-from2.json"
    ok(
        cli(
            home, "rollback", "authorize", out2, "m", "--to", "1.0", "--from", "2.0",
            "--key", repo.keydir / "rb.key",
        )
    )  # fmt: skip
    ok(cli(home, "rollback", "m", "--authorization", out2))


def test_committed_change_with_failed_witness_write_is_reported_done(
    wsite: Site, tmp_path: Path
) -> None:
    w = tmp_path / "wdir" / "witness.json"
    w.parent.mkdir()
    home = copy_home(wsite.home, tmp_path / "home", witness_src=wsite.witness, witness_dst=w)
    b = wsite.repo.bundle({"m@3.0": M2 + b"3"}, sequence=3)
    subprocess.run(["chattr", "+i", str(w.parent)], check=True)  # renames into it now fail
    try:
        r = cli(home, "import", b.path)
    finally:
        subprocess.run(["chattr", "-i", str(w.parent)], check=True)
    assert r.rc == 0, str(r)
    assert any(x.startswith("witness_write_failed") for x in r.out["warnings"]), r.out
    assert "witness_write_failed" in r.stderr
    r = cli(home, "import", b.path)  # a retry is a replay: the change was made once
    assert (r.rc, r.code) == (1, "sequence_replayed"), str(r)
    ok(cli(home, "load", "m", "-o", tmp_path / "o"))  # and the witness is brought forward
