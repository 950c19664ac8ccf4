"""bench/service_bench.py works end to end (quick sizes); shape only, no timing asserts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_service_bench_quick_reports_and_loses_no_event() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("APPLIANCE_HOME", "APPLIANCE_SOCKET")}
    env["PYTHONPATH"] = str(REPO)
    p = subprocess.run(
        [sys.executable, str(REPO / "bench" / "service_bench.py"), "--quick", "--json"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(p.stdout)
    for key in ("tiny_direct_ms", "tiny_service_ms"):
        assert 0 < res[key]["median"] <= res[key]["p99"]
    c = res["concurrent"]
    assert c["loaders"] == 64 and c["failed"] == 0
    assert c["loads"] == 64 * 8 and c["events_lost"] == 0 and c["per_second"] > 0
    assert c["service_cpu_ms_per_load"] > 0 and c["clients_cpu_ms_per_load"] > 0
    assert set(res["targets"]) == {"service_tiny_median_ms", "service_64_loaders_per_s"}
