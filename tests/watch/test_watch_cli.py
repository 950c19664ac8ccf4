"""``appliance watch`` and ``appliance alarms`` through the real CLI, in real processes."""

from __future__ import annotations

import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from conformance.driver import REPO
from conftest_load import Site
from watch_world import DEADLINE, MARGIN, make_writable

from appliance.store import find, object_path


def _obj(site: Site, ref: str = "model@2.0") -> Path:
    db = site.h.db()
    try:
        name, _, version = ref.partition("@")
        return object_path(site.h, find(db, name, version).digest)
    finally:
        db.conn.close()


def _alarm_events(site: Site) -> list[dict[str, Any]]:
    db = site.h.db()
    try:
        return [
            {"seq": r[0], "code": r[1]}
            for r in db.execute("SELECT seq, code FROM audit WHERE type = 'alarm' ORDER BY seq")
        ]
    finally:
        db.conn.close()


def test_once_clean_is_0_with_one_json_object(site: Site) -> None:
    res = site.cli("--witness", str(site.witness), "watch", "--once", "--json", check=0)
    assert json.loads(res.stdout) == {"ok": True, "findings": []}
    assert _alarm_events(site) == []


def test_once_finds_a_silent_change_exits_4_and_records_it_once(site: Site) -> None:
    path = _obj(site, "tool@1.0")
    make_writable(path)
    with open(path, "r+b") as f:
        f.write(b"Z")  # same size: only a re-hash sees it
    os.chmod(path, 0o444)
    res = site.cli("--witness", str(site.witness), "watch", "--once", "--json", check=4)
    doc = json.loads(res.stdout)
    assert doc["ok"] is False and doc["error"]["code"] == "object_modified"
    assert [f["alarm"] for f in doc["findings"]] == ["object_modified"]
    assert "ALARM [object_modified]" in res.stderr
    assert [e["code"] for e in _alarm_events(site)] == ["object_modified"]
    site.cli("--witness", str(site.witness), "watch", "--once", check=4)
    assert len(_alarm_events(site)) == 1  # still unacknowledged: not recorded twice


def test_alarms_list_and_ack_are_audited(site: Site) -> None:
    os.unlink(_obj(site))
    site.cli("--witness", str(site.witness), "watch", "--once", check=4)
    listed = site.cli("alarms", "--json", check=0).json["alarms"]
    assert [a["alarm"] for a in listed] == ["object_removed"]
    assert listed[0]["acknowledged"] is None and listed[0]["advice"]
    seq = listed[0]["seq"]
    acked = site.cli("alarms", "--ack", str(seq), "--note", "re-imported", "--json", check=0).json
    assert acked["acknowledged"] == seq and acked["event"]["type"] == "alarm_ack"
    detail = dict(acked["event"]["detail"])
    assert detail.pop("trusted_time")  # every event carries it (docs/AUDIT.md)
    assert detail == {"alarm_seq": seq, "note": "re-imported"}
    assert site.cli("alarms", "--json", check=0).json["alarms"] == []
    every = site.cli("alarms", "--all", "--json", check=0).json["alarms"]
    assert every[0]["acknowledged"]["seq"] == acked["event"]["seq"]
    again = site.cli("alarms", "--ack", str(seq), "--json", check=2).json
    assert again["error"]["code"] == "alarm_already_acknowledged"
    before = site.cli("audit", "show", "--limit", "0", "--json", check=0).json["events"]
    missing = site.cli("alarms", "--ack", "1", "--json", check=2).json
    assert missing["error"]["code"] == "alarm_not_found"
    after = site.cli("audit", "show", "--limit", "0", "--json", check=0).json["events"]
    assert after == before  # a refused acknowledgement changes nothing


def _set_detail(site: Site, seq: int, detail: str) -> None:
    conn = sqlite3.connect(site.home / "appliance.db")
    with conn:
        conn.execute("UPDATE audit SET detail = ? WHERE seq = ?", [detail, seq])
    conn.close()


def test_an_edited_alarm_or_acknowledgement_detail_still_shows_the_alarm(site: Site) -> None:
    """A writer of the database turns an alarm's detail, or its acknowledgement's, into
    something no event holds: ``alarms`` still lists the alarm (never an internal error,
    never hidden), and an acknowledgement it cannot read is not honoured."""
    os.unlink(_obj(site))
    site.cli("--witness", str(site.witness), "watch", "--once", check=4)
    seq = _alarm_events(site)[0]["seq"]
    acked = site.cli("alarms", "--ack", str(seq), "--json", check=0).json
    assert site.cli("alarms", "--json", check=0).json["alarms"] == []
    _set_detail(site, acked["event"]["seq"], "not json")
    listed = site.cli("alarms", "--json", check=0).json["alarms"]
    assert [(a["seq"], a["alarm"], a["acknowledged"]) for a in listed] == [
        (seq, "object_removed", None)
    ]
    _set_detail(site, seq, "[]")
    listed = site.cli("alarms", "--json", check=0).json["alarms"]
    assert [(a["seq"], a["alarm"]) for a in listed] == [(seq, "object_removed")]
    site.cli("audit", "verify", check=4)  # the log says it was edited


def test_bad_scrub_rate_is_a_usage_error(site: Site) -> None:
    res = site.cli("watch", "--scrub", "fast", "--json", check=2)
    assert res.json["error"]["code"] == "usage"


def _readline(p: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    assert p.stdout is not None
    ready, _, _ = select.select([p.stdout], [], [], timeout)
    assert ready, "no line from the watcher"
    line = p.stdout.readline()
    assert line, "watcher exited"
    doc: dict[str, Any] = json.loads(line)
    return doc


def test_watch_process_streams_json_lines_and_stops_on_sigterm(site: Site) -> None:
    cmd = [
        sys.executable,
        "-m",
        "appliance",
        "--home",
        str(site.home),
        "--witness",
        str(site.witness),
        "watch",
        "--json",
        "--scrub",
        "100M",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert _readline(p, 30)["watching"] == str(site.home)
        t = time.monotonic()
        os.unlink(_obj(site))
        while True:
            doc = _readline(p, DEADLINE)
            if "alarm" in doc:
                break
            assert "scrub" in doc  # the only other kind of line
        took = time.monotonic() - t
        assert doc["alarm"] == "object_removed" and took < DEADLINE - MARGIN, (doc, took)
        assert set(doc) >= {"alarm", "subject", "at", "message", "advice"}
        time.sleep(1.5)  # at least one scrub progress line (one a second while it changes)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
        lines = [json.loads(x) for x in out.splitlines()]
        assert lines[-1]["ok"] is True and lines[-1]["alarms"] >= 1
        scrub = [x["scrub"] for x in lines if "scrub" in x]
        assert scrub and scrub[-1]["rate"] == 100 << 20 and scrub[-1]["objects_total"] == 3
        assert b"ALARM [object_removed]" in err
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert [e["code"] for e in _alarm_events(site)][:1] == ["object_removed"]
