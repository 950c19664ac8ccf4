"""``make fuzz FUZZ_MINUTES=N``: seed each harness's corpus, run it N minutes, sum up.

Prints, per harness, the executions, the executions per second, the corpus
size, and the findings (files libFuzzer wrote to ``fuzz/findings/``). Exits 1
when any harness found a crash. A summary is also written to
``fuzz/findings/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
HARNESSES = {"manifest": "fuzz_manifest.py", "tar": "fuzz_tar.py", "documents": "fuzz_documents.py"}


def seed(name: str) -> Path:
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(HERE.parent))
    from _common import seeds

    corpus = HERE / "corpus" / name
    corpus.mkdir(parents=True, exist_ok=True)
    for i, data in enumerate(seeds()[name]):
        (corpus / f"seed-{i}").write_bytes(data)
    return corpus


def run(name: str, seconds: int) -> dict[str, object]:
    corpus = seed(name)
    findings = HERE / "findings" / name
    findings.mkdir(parents=True, exist_ok=True)
    before = set(os.listdir(findings))
    cmd = [
        sys.executable,
        str(HERE / HARNESSES[name]),
        str(corpus),
        f"-max_total_time={seconds}",
        f"-artifact_prefix={findings}/",
        "-print_final_stats=1",
        "-max_len=65536",
        "-timeout=20",
        "-rss_limit_mb=2048",
    ]
    env = {**os.environ, "PYTHONPATH": f"{HERE}:{HERE.parent}"}
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    took = time.monotonic() - t0
    log = p.stdout + p.stderr
    (findings / "last.log").write_text(log[-200_000:])
    m = re.search(r"stat::number_of_executed_units:\s*(\d+)", log) or re.search(
        r"Done (\d+) runs", log
    )
    execs = int(m.group(1)) if m else 0
    new = sorted(set(os.listdir(findings)) - before - {"last.log"})
    return {
        "harness": name,
        "seconds": round(took, 1),
        "executions": execs,
        "exec_per_s": round(execs / took) if took else 0,
        "corpus": len(os.listdir(corpus)),
        "exit_code": p.returncode,
        "findings": new,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=1.0)
    ap.add_argument("--only", choices=sorted(HARNESSES), action="append")
    args = ap.parse_args()
    results = [run(n, max(1, int(args.minutes * 60))) for n in (args.only or HARNESSES)]
    for r in results:
        found = r["findings"]
        assert isinstance(found, list)
        print(
            f"{r['harness']:<10} {r['executions']:>10,} execs  {r['exec_per_s']:>6}/s  "
            f"corpus {r['corpus']:>5}  findings {len(found)}  (exit {r['exit_code']})"
        )
    (HERE / "findings" / "summary.json").write_text(json.dumps(results, indent=2) + "\n")
    return 1 if any(r["findings"] or r["exit_code"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
