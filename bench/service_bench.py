#!/usr/bin/env python3
"""Loads through the loader service (``appliance serve``), each with its audit event.

    .venv/bin/python bench/service_bench.py [--quick] [--json]

1. A tiny (4 KiB) verified load through the service, one client, one at a
   time: median and p99 of the whole round trip (connect, request, the
   service's re-hash, trust check and committed audit event, the reply with
   the descriptor). Beside it, in the same run, the same load done directly in
   process (``appliance.load``, audited), the reference.
2. 64 loaders at once (4 client processes x 16 threads, so the clients' own
   GIL is not what is measured): audited loads per second over the whole
   window, and a count of the load events in the audit log afterwards (none
   may be lost). Beside it, the CPU time per load of the service process (all
   its threads, from /proc) and of the client processes: on a shared machine
   the rate moves with the load, the service's CPU per load much less.

The service runs as a subprocess of this script with the real CLI
(``python -m appliance serve``); the site is built with the real CLI too.
``run(work, quick, log)`` is what ``bench/run.py`` calls.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TARGET_MEDIAN_MS = 5.0
TARGET_PER_SECOND = 1000.0


def _cli(*args: str | os.PathLike[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run(
        [sys.executable, "-m", "appliance", *map(str, args)],
        check=True,
        env=env,
        capture_output=True,
    )


def build_site(work: Path) -> tuple[Path, Path]:
    """A home with one 4 KiB artifact ``tiny`` and a grant for this user; (home, keys)."""
    keys = work / "keys"
    for name in ("root", "pub"):
        _cli("key", "new", name, "--out", keys)
    home = work / "home"
    _cli("--home", home, "init", "--root-key", keys / "root.pub", "--site", "bench")
    import pwd

    me = pwd.getpwuid(os.getuid()).pw_name
    upd = work / "trust-2.json"
    _cli(
        "trust",
        "update",
        upd,
        "--version",
        "2",
        "--key",
        keys / "root.key",
        "--add-key",
        keys / "pub.pub",
        "--role",
        "publisher",
        "--stream",
        "bench",
        "--allow-loader",
        me,
        "--stream",
        "bench",
    )
    _cli("--home", home, "trust", "apply", upd)
    tiny = work / "tiny.bin"
    tiny.write_bytes(random.Random(3).randbytes(4096))
    bundle = work / "bundle"
    _cli(
        "bundle",
        "create",
        bundle,
        "--stream",
        "bench",
        "--sequence",
        "1",
        "--key",
        keys / "pub.key",
        "--any-site",
        f"tiny@1={tiny}",
    )
    _cli("--home", home, "import", bundle)
    return home, keys


def start_service(home: Path, sock: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.Popen(
        [sys.executable, "-m", "appliance", "--home", str(home), "serve", "--socket", str(sock)],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not sock.exists():
        if time.monotonic() > deadline or p.poll() is not None:
            raise RuntimeError("appliance serve did not start")
        time.sleep(0.02)
    return p


def load_events(home: Path) -> int:
    with sqlite3.connect(home / "appliance.db") as c:
        return int(
            c.execute(
                "SELECT count(*) FROM audit WHERE type='load' AND outcome='verified'"
            ).fetchone()[0]
        )


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _timed(fn: Callable[[], None], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def _p(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


def client_main(sock: str, threads: int, per_thread: int, start_at: float) -> None:
    """One client process: ``threads`` loaders, each ``per_thread`` loads; prints a JSON line."""
    sys.path.insert(0, str(REPO))
    from appliance.service.client import request_load

    request_load(Path(sock), "tiny").close()  # import and connect once before the clock
    done = [0] * threads
    failures: list[str] = []

    def loader(i: int) -> None:
        for _ in range(per_thread):
            try:
                request_load(Path(sock), "tiny").close()
                done[i] += 1
            except Exception as e:  # noqa: BLE001 - counted and reported, never hidden
                failures.append(repr(e))

    while time.time() < start_at:
        time.sleep(0.001)
    t0 = time.time()
    ts = [threading.Thread(target=loader, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    print(
        json.dumps(
            {
                "start": t0,
                "end": time.time(),
                "loads": sum(done),
                "failures": failures[:5],
                "failed": len(failures),
            }
        )
    )


def run(work: Path, quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    sys.path.insert(0, str(REPO))
    import appliance
    from appliance.service.client import request_load

    work.mkdir(parents=True, exist_ok=True)
    home, _ = build_site(work)
    sock = work / "appliance.sock"
    n = 100 if quick else 500
    per = 8 if quick else 40
    # Reference in the same run: the direct in-process audited load.
    direct = _timed(lambda: appliance.load("tiny", home=home).close(), n)
    proc = start_service(home, sock)
    try:
        for _ in range(20):
            request_load(sock, "tiny").close()
        log(f"service: {n} sequential tiny loads")
        via = _timed(lambda: request_load(sock, "tiny").close(), n)
        before = load_events(home)
        served_cpu, clients_cpu = cpu_seconds(proc.pid), _children_cpu()
        log(f"service: 64 loaders x {per} loads")
        start_at = time.time() + 1.5
        clients = [
            subprocess.Popen(
                [sys.executable, __file__, "--client", str(sock), "16", str(per), str(start_at)],
                stdout=subprocess.PIPE,
                env={**os.environ, "PYTHONPATH": str(REPO)},
            )
            for _ in range(4)
        ]
        outs = [
            json.loads(c.communicate(timeout=600)[0].decode().strip().splitlines()[-1])
            for c in clients
        ]
        served_cpu = cpu_seconds(proc.pid) - served_cpu
        clients_cpu = _children_cpu() - clients_cpu  # the 4 client processes, start-up too
        after = load_events(home)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    total = sum(o["loads"] for o in outs)
    window = max(o["end"] for o in outs) - min(o["start"] for o in outs)
    rate = total / window
    return {
        "tiny_direct_ms": {
            "median": statistics.median(direct) * 1e3,
            "p99": _p(direct, 0.99) * 1e3,
        },
        "tiny_service_ms": {"median": statistics.median(via) * 1e3, "p99": _p(via, 0.99) * 1e3},
        "concurrent": {
            "loaders": 64,
            "loads": total,
            "failed": sum(o["failed"] for o in outs),
            "seconds": window,
            "per_second": rate,
            "events_recorded": after - before,
            # each client process also makes one warm-up load before the clock starts
            "events_lost": total + len(clients) - (after - before),
            # CPU per load over the concurrent phase: the service process (all threads) and
            # the 4 client processes (their interpreter start-up included)
            "service_cpu_ms_per_load": served_cpu * 1e3 / (total + len(clients)),
            "clients_cpu_ms_per_load": clients_cpu * 1e3 / (total + len(clients)),
        },
        "targets": {
            "service_tiny_median_ms": {
                "limit": TARGET_MEDIAN_MS,
                "value": statistics.median(via) * 1e3,
                "met": statistics.median(via) * 1e3 < TARGET_MEDIAN_MS,
            },
            "service_64_loaders_per_s": {
                "limit": TARGET_PER_SECOND,
                "value": rate,
                "met": rate >= TARGET_PER_SECOND,
            },
        },
        "samples": n,
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--client"]:
        client_main(argv[1], int(argv[2]), int(argv[3]), float(argv[4]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="appliance-svc-bench-"))
    try:
        res = run(work, args.quick, lambda m: print(m, file=sys.stderr, flush=True))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        d, s, c = res["tiny_direct_ms"], res["tiny_service_ms"], res["concurrent"]
        print(f"tiny load, direct in process : median {d['median']:.2f} ms, p99 {d['p99']:.2f} ms")
        print(
            f"tiny load, through service   : median {s['median']:.2f} ms, p99 {s['p99']:.2f} ms"
            f"  (target < {TARGET_MEDIAN_MS} ms median)"
        )
        print(
            f"64 loaders                   : {c['per_second']:,.0f} audited loads/s "
            f"({c['loads']} in {c['seconds']:.2f} s; failed {c['failed']}; "
            f"events recorded {c['events_recorded']}, lost {c['events_lost']})"
            f"  (target >= {TARGET_PER_SECOND:,.0f}/s)"
        )
        print(
            f"  CPU per load                : service {c['service_cpu_ms_per_load']:.3f} ms, "
            f"clients {c['clients_cpu_ms_per_load']:.3f} ms (start-up included)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
