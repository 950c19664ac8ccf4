"""The benchmark harness works end to end (``bench/run.py --quick``); no timing asserts.

Runs every section on small sizes (64 MiB, 500 small files, 2 repetitions) in a
scratch folder and checks the report's shape: each pair measured, medians and
ratios present, the Markdown table written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_bench_quick_writes_a_report(tmp_path: Path) -> None:
    out = tmp_path / "results"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("APPLIANCE_HOME", None)
    env.pop("APPLIANCE_WITNESS", None)
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "run.py"),
            "--quick",
            "--size",
            "16M",
            "--small-files",
            "300",
            "--out",
            str(out),
            "--workdir",
            str(tmp_path),
            "--only",
            "hash,import,small,load,startup",  # the TUI's own bench is bench/tui_latency.py
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((out / "latest.json").read_text())
    assert report["mode"] == "quick"
    sections = {s["id"]: s for s in report["sections"]}
    assert {1, 2, 3, 4, 5} <= set(sections)
    for section in sections.values():
        for case in section["cases"]:
            assert case["runs"] >= 1 and case["median_s"] > 0, case
            assert case["min_s"] <= case["median_s"] <= case["max_s"]
    names = {c["name"] for c in sections[1]["cases"]}
    assert "ours: hash_path (in process)" in names
    names = {c["name"] for c in sections[2]["cases"]}
    assert {"appliance import (CLI, one pass)", "cp (alone)"} <= names
    for key in ("hash", "import", "small", "load", "startup"):
        assert key in report["targets"], key
    for key in ("hash", "import", "small", "startup"):
        assert isinstance(report["targets"][key]["value"], float), key
    md = (out / "latest.md").read_text()
    assert "| target | limit | measured | met |" in md
    assert not any(tmp_path.glob("appliance-bench-*")), "the scratch folder was left behind"
