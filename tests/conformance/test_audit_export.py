"""docs/AUDIT.md is precise enough to verify an export without the appliance.

``docs/examples/verify_audit_export.py`` was written from the document and
imports nothing of the project; it runs here in an isolated interpreter
(``python -I``: no project on the path) against a real ``audit export``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .driver import REPO, Site, cli, ok

SCRIPT = REPO / "docs" / "examples" / "verify_audit_export.py"


def _export(home: Path, out: Path) -> list[dict[str, object]]:
    events = ok(cli(home, "audit", "export"))["events"]
    out.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in events))
    return events


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-I", SCRIPT, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd="/",
    )


def test_independent_script_verifies_a_real_export(site: Site, home: Path, tmp_path: Path) -> None:
    out = tmp_path / "audit.jsonl"
    events = _export(home, out)
    head = events[-1]["hash"]
    p = _run(out, "--head", str(head), "--events", str(len(events)))
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.strip() == f"intact: {len(events)} events, head {head}"


def test_independent_script_finds_an_edit_a_gap_and_a_truncation(
    site: Site, home: Path, tmp_path: Path
) -> None:
    out = tmp_path / "audit.jsonl"
    events = _export(home, out)
    lines = out.read_text().splitlines()
    edited = json.loads(lines[2])
    edited["detail"]["message"] = "nothing happened"
    edited["detail_json"] = json.dumps(edited["detail"], sort_keys=True, separators=(",", ":"))
    bad = tmp_path / "edited.jsonl"
    bad.write_text("\n".join([*lines[:2], json.dumps(edited), *lines[3:]]) + "\n")
    p = _run(bad)
    assert p.returncode == 1 and "event 3 was altered" in p.stdout, p.stdout
    gap = tmp_path / "gap.jsonl"
    gap.write_text("\n".join([*lines[:2], *lines[3:]]) + "\n")
    p = _run(gap)
    assert p.returncode == 1 and "event 3 is missing" in p.stdout, p.stdout
    short = tmp_path / "short.jsonl"
    short.write_text("\n".join(lines[:-1]) + "\n")
    p = _run(short, "--head", str(events[-1]["hash"]), "--events", str(len(events)))
    assert p.returncode == 1 and "truncated" in p.stdout, p.stdout
