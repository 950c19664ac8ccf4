#!/usr/bin/env python3
"""The scale section: each product path at several sizes, beside its reference tool.

    .venv/bin/python bench/scale.py                          # 1k, 5k, 20k artifacts; 1 GiB, 2 GiB
    .venv/bin/python bench/scale.py --counts 1000,20000,100000 --sizes 1G,2G,4G,16G

Per count N (small files of 1 to 8 KiB, one bundle): ``bundle create`` against ``cp -r``
then ``b3sum`` of the copy; ``import`` against ``cp -r`` then ``sync``; ``verify`` against
``b3sum`` over the same store objects; a tiny verified load (``appliance.load``, in
process, from a home holding that bundle). Per size S: ``load -o /dev/null`` and ``exec
-- true`` against ``b3sum`` of the object. Then ``audit verify`` of a log of 1,000,000
events. Every pair runs interleaved in one run (``bench/run.py``'s ``measure``), page
cache warm; the figures are medians. Writes ``bench/results/scale-latest.json`` and the
plot ``docs/scale.png``. The plot needs matplotlib (the ``bench`` extra): install it in
another environment and name its interpreter with ``--plot-python`` (matplotlib brings
numpy, which the product's own environment should not hold: a library that imports it
when it can would add to every measured CLI start-up). ``--plot-from JSON`` only draws.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import run as R

REPO = R.REPO
TARGETS = {
    "verify": "files/s over b3sum's >= 1.5",
    "tiny_load": "ms < 5",
    "import": "time over cp -r + sync <= 1.5",
    "create": "time over cp -r + b3sum <= 1.5",
    "load": "time over b3sum <= 1.25",
    "exec": "time over b3sum <= 1.25",
    "audit": "seconds < 10",
}


def log(msg: str) -> None:
    print(msg, flush=True)


def unflag(root: Path) -> None:
    """Clear the immutable flag of every store object under ``root`` (before removing it)."""
    from appliance.store import clear_immutable

    for objects in root.rglob("objects"):
        for p in objects.rglob("*"):
            if p.is_file():
                clear_immutable(p)


def rmtree(path: Path) -> None:
    if path.exists():
        unflag(path)
        shutil.rmtree(path, ignore_errors=True)


TRASH: list[Path] = []  # the folder that put_away moves into (set by main)


def put_away(path: Path) -> None:
    """Move ``path`` out of the way by a rename; it is removed when the whole run ends.

    Deleting thousands of files here would make every file created in the next minutes
    slower: with no journal, ext4 skips the inodes freed in the last 60 to 300 seconds
    (``recently_deleted``), reading their inode table block for each one it passes. perf
    put 62% of an import's CPU there when each repetition deleted the previous 20,000
    objects. A site's imports do not follow the deletion of a whole store, so neither the
    measured commands nor their references pay for it: nothing is deleted until the end.
    """
    if not path.exists() and not path.is_symlink():
        return
    if not TRASH:
        rmtree(path)
        return
    TRASH[0].mkdir(exist_ok=True)
    path.rename(TRASH[0] / f"{len(list(TRASH[0].iterdir())):06d}-{path.name}")


def away(path: Path) -> Callable[[], None]:
    return lambda: put_away(path)


def small_files(root: Path, count: int) -> list[str]:
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(count)
    names = []
    for i in range(count):
        name = f"f{i:06d}"
        (root / name).write_bytes(rng.randbytes(rng.randint(1024, 8192)))
        names.append(name)
    return names


def create_args(keys: Path, out: Path, names: list[str], seq: int) -> list[str]:
    return [
        *R.cli(),
        "bundle",
        "create",
        str(out),
        "--stream",
        R.STREAM,
        "--sequence",
        str(seq),
        "--key",
        str(keys / "pub.key"),
        "--any-site",
        *(f"{n}@1={n}" for n in names),
    ]


def make_bundle_api(keys: Path, out: Path, src: Path, names: list[str], seq: int) -> None:
    """A bundle of many artifacts through the product's Python API (no argv limit)."""
    from datetime import timedelta

    from bundles.keys import load_private_key
    from bundles.timeutil import utcnow
    from bundles.writer import ArtifactSpec, create_bundle

    specs = [ArtifactSpec(n, "1", src / n) for n in names]
    create_bundle(
        out,
        specs,
        stream=R.STREAM,
        sequence=seq,
        keys=[load_private_key(keys / "pub.key")],
        expires=utcnow() + timedelta(days=30),
        any_site=True,
    )


def objects_of(home: Path) -> list[Path]:
    return sorted(p for p in (home / "objects").rglob("*") if p.is_file())


def fresh_home(template: Path, home: Path) -> Callable[[], None]:
    def go() -> None:
        put_away(home)
        R._copy_home(template, home)
        R.sync()

    return go


SECTIONS = ("create", "import", "verify", "sizes", "audit")
COUNT_SECTIONS = frozenset({"create", "import", "verify"})  # the per-count rows


def per_count(
    work: Path,
    keys: Path,
    template: Path,
    n: int,
    b3sum: str,
    reps: int,
    only: frozenset[str] = frozenset(SECTIONS),
) -> dict[str, Any]:
    app = R.cli()
    d = work / f"n{n}"
    src = d / "src"
    log(f"== {n} artifacts: writing files")
    names = small_files(src, n)
    bundle = d / "bundle"
    out: dict[str, Any] = {"count": n}
    cp_b3 = f"cp -r {src} {d}/copy && cd {d}/copy && {b3sum} * > /dev/null"
    cases = [
        R.Case("cp -r + b3sum", ["sh", "-c", cp_b3], prep=away(d / "copy"), after=away(d / "copy")),
        # not the target's reference: ``bundle create`` flushes what it wrote (one syncfs)
        # before it renames the bundle into place, and this shows what that flush costs
        R.Case(
            "cp -r + b3sum + sync",
            ["sh", "-c", f"{cp_b3} && sync"],
            prep=R.both(away(d / "copy"), R.sync),
            after=away(d / "copy"),
        ),
    ]
    argv_ok = sum(len(a) + 1 for a in create_args(keys, bundle, names, 1)) < 1_500_000
    if argv_ok:
        cases.append(
            R.Case(
                "appliance bundle create",
                create_args(keys, d / "bundle-c", names, 1),
                cwd=src,
                prep=away(d / "bundle-c"),
                after=away(d / "bundle-c"),
            )
        )
    for c in cases:
        c.inputs = [src / x for x in names]
    if "create" in only:
        R.measure(cases, reps, log)
        by = R.by_name(cases)
        if argv_ok:
            out["create_s"] = by["appliance bundle create"].median()
        out["cp_b3sum_s"] = by["cp -r + b3sum"].median()
        out["cp_b3sum_sync_s"] = by["cp -r + b3sum + sync"].median()
    if not only & {"import", "verify"}:
        put_away(d)
        return out
    make_bundle_api(keys, bundle, src, names, 1)
    media = bundle / "artifacts"
    home = d / "home"
    cases = [
        R.Case(
            "cp -r + sync",
            ["sh", "-c", f"cp -r {media} {d}/copy && sync"],
            prep=R.both(away(d / "copy"), R.sync),
            after=away(d / "copy"),
        ),
        R.Case(
            "appliance import",
            [*app, "--home", str(home), "import", str(bundle)],
            prep=fresh_home(template, home),
        ),
    ]
    for c in cases:
        c.inputs = sorted(p for p in bundle.rglob("*") if p.is_file())
    if "import" in only:
        R.measure(cases, reps, log)
        by = R.by_name(cases)
        out["import_s"] = by["appliance import"].median()
        out["cp_sync_s"] = by["cp -r + sync"].median()
    else:  # only verify: the store is built (not timed)
        R._copy_home(template, home)
        R.quiet([*app, "--home", home, "import", bundle])
    if "verify" not in only:
        put_away(d)
        return out
    return _verify_rows(d, names, b3sum, reps, out)


def _verify_rows(
    d: Path, names: list[str], b3sum: str, reps: int, out: dict[str, Any]
) -> dict[str, Any]:
    """``verify`` beside ``b3sum`` of the store's objects, and the tiny load, of the home
    ``d/home`` holding the bundle of ``names``."""
    app, home, n = R.cli(), d / "home", len(names)
    objs = objects_of(home)
    listing = d / "objects.txt"
    listing.write_text("\0".join(map(str, objs)))
    cases = [
        R.Case("appliance verify", [*app, "--home", str(home), "verify"], stdout_null=True),
        R.Case(
            "b3sum OBJECTS",
            ["sh", "-c", f"xargs -0 {b3sum} < {listing} > /dev/null"],
        ),
        R.Case(
            "appliance.load tiny (in process)",
            R.py(R.WORKER, "load-tiny", home, names[n // 2], "30"),
            inner=True,
        ),
    ]
    for c in cases:
        c.inputs = objs
    R.measure(cases, reps, log)
    by = R.by_name(cases)
    out["verify_s"] = by["appliance verify"].median()
    out["b3sum_objects_s"] = by["b3sum OBJECTS"].median()
    tiny = by["appliance.load tiny (in process)"]
    inner = [s.inner for s in tiny.samples if s.inner]
    out["tiny_load_ms"] = sorted(x["unrecorded_ms"] for x in inner)[len(inner) // 2]
    out["tiny_load_audited_ms"] = sorted(x["audited_ms"] for x in inner)[len(inner) // 2]
    out["tiny_first_load_ms"] = sorted(x["first_ms"] for x in inner)[len(inner) // 2]
    put_away(d)
    return out


def tiny_only(work: Path, keys: Path, template: Path, n: int, reps: int) -> dict[str, Any]:
    """A home holding one bundle of ``n`` artifacts (built and imported once, not timed:
    at 100,000 that takes minutes), then only the tiny verified load, in process: the
    first load of the process (it verifies and parses the bundle's stored manifest) and
    the median of 30 after it, unrecorded and audited."""
    app = R.cli()
    d = work / f"t{n}"
    src = d / "src"
    log(f"== tiny load from a bundle of {n} artifacts: building it (not timed)")
    names = small_files(src, n)
    bundle = d / "bundle"
    make_bundle_api(keys, bundle, src, names, 1)
    rmtree(src)
    home = d / "home"
    R._copy_home(template, home)
    R.quiet([*app, "--home", home, "import", bundle])
    rmtree(bundle)
    cases = [
        R.Case(
            "appliance.load tiny (in process)",
            R.py(R.WORKER, "load-tiny", home, names[n // 2], "30"),
            inner=True,
        )
    ]
    R.measure(cases, reps, log)
    inner = [s.inner for s in cases[0].samples if s.inner]
    mid = len(inner) // 2
    out = {
        "count": n,
        "tiny_load_ms": sorted(x["unrecorded_ms"] for x in inner)[mid],
        "tiny_load_audited_ms": sorted(x["audited_ms"] for x in inner)[mid],
        "tiny_first_load_ms": sorted(x["first_ms"] for x in inner)[mid],
    }
    rmtree(d)
    return out


def per_size(work: Path, keys: Path, template: Path, size: int, b3sum: str, reps: int) -> Any:
    app = R.cli()
    d = work / f"s{size >> 20}M"
    d.mkdir()
    big = d / "big.bin"
    log(f"== {size / R.GiB:g} GiB: writing the file and importing it")
    R.write_file(big, size)
    bundle = d / "bundle"
    R.quiet(
        [*app, "bundle", "create", bundle, "--stream", R.STREAM, "--sequence", "1"]
        + ["--key", keys / "pub.key", "--any-site", f"big@1={big}"]
    )
    big.unlink()
    home = d / "home"
    R._copy_home(template, home)
    R.quiet([*app, "--home", home, "import", bundle])
    rmtree(bundle)
    obj = objects_of(home)[0]
    cases = [
        R.Case("b3sum OBJECT", [b3sum, str(obj)]),
        R.Case(
            "appliance load -o /dev/null",
            [*app, "--home", str(home), "load", "big", "-o", "/dev/null"],
        ),
        R.Case("appliance exec -- true", [*app, "--home", str(home), "exec", "big", "--", "true"]),
    ]
    for c in cases:
        c.inputs = [obj]
    R.measure(cases, reps, log)
    by = R.by_name(cases)
    out = {
        "size": size,
        "b3sum_s": by["b3sum OBJECT"].median(),
        "load_s": by["appliance load -o /dev/null"].median(),
        "exec_s": by["appliance exec -- true"].median(),
    }
    doc = json.loads(R.quiet([*app, "--home", home, "--json", "load", "big", "-o", "/dev/null"]))
    out["copy"] = doc.get("copy")
    rmtree(d)
    return out


def audit_log(work: Path, template: Path, events: int, reps: int) -> dict[str, Any]:
    """A home with ``events`` audit events (written straight into the table, chained by
    the rule of ``appliance.audit.event_hash``), then ``audit verify`` from the CLI."""
    from appliance.audit import FIELDS, event_hash

    home = work / "home-audit"
    R._copy_home(template, home)
    log(f"== audit verify: writing {events:,} events")
    conn = sqlite3.connect(home / "appliance.db")
    seq, prev = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    rows = []
    for i in range(seq + 1, seq + 1 + events):
        ev = {
            "seq": i,
            "ts": "2026-12-01T00:00:00Z",
            "type": "load",
            "outcome": "verified",
            "code": None,
            "name": f"model-{i % 97}",
            "version": "1",
            "detail": json.dumps({"digest": "ab" * 32, "size": i}, separators=(",", ":")),
        }
        body = json.dumps({k: ev[k] for k in FIELDS}, sort_keys=True, separators=(",", ":"))
        h = hashlib.sha256(bytes.fromhex(prev) + body.encode()).hexdigest()
        if i == seq + 1:
            assert h == event_hash(prev, ev)  # the same rule as the product's
        rows.append((*[ev[k] for k in FIELDS], prev, h))
        prev = h
    conn.executemany(f"INSERT INTO audit VALUES ({','.join('?' * 10)})", rows)
    conn.commit()
    conn.close()
    app = R.cli()
    cases = [R.Case("appliance audit verify", [*app, "--home", str(home), "audit", "verify"])]
    R.measure(cases, reps, log)
    return {"events": events + seq, "audit_verify_s": cases[0].median()}


# The per-count rows of ``table``: (target, our key, the reference's key, whether the ratio
# is the reference's time over ours (a rate) rather than ours over its, limit). The row with
# limit "-" explains (the reference flushes too, as ``bundle create`` does) and has no target.
_COUNT_ROWS = (
    (
        "`verify` files/s vs `b3sum` (b3sum time / ours)",
        "verify_s",
        "b3sum_objects_s",
        True,
        ">= 1.5",
    ),
    ("`import` vs `cp -r` + `sync`", "import_s", "cp_sync_s", False, "<= 1.5"),
    ("`bundle create` vs `cp -r` + `b3sum`", "create_s", "cp_b3sum_s", False, "<= 1.5"),
    (
        "`bundle create` vs `cp -r` + `b3sum` + `sync` (no target)",
        "create_s",
        "cp_b3sum_sync_s",
        False,
        "-",
    ),
)


def _row(target: str, size: str, ours: str, ref: str, ratio: float | None, limit: str) -> str:
    if ratio is None:
        return f"| {target} | {size} | {ours} | {ref} | | {limit} | not measured |"
    if limit == "-":  # shown for what it explains, judged against no target
        return f"| {target} | {size} | {ours} | {ref} | {ratio:.3g} | - | - |"
    op, bound = limit.split()
    value = float(bound)
    met = ratio >= value if op == ">=" else (ratio < value if op == "<" else ratio <= value)
    return (
        f"| {target} | {size} | {ours} | {ref} | {ratio:.3g} | {limit} | "
        f"{'yes' if met else '**no**'} |"
    )


def table(report: dict[str, Any]) -> str:
    """Every second-round target of the run in ``report``, one row per size: what was
    measured, the reference in the same run, the ratio and whether the target is met."""
    m = report.get("machine", {})
    lines = [
        f"Run {report['when']}, command `{' '.join(report.get('argv', []))}`; machine "
        f"{m.get('Model name', '?')}, {m.get('CPU(s)', '?')} CPUs, {m.get('filesystem', '?')}; "
        f"load average {report['load_before']} before, {report.get('load_after', '?')} after.",
        "",
        "| target | N / size | ours | reference | ratio | target | met? |",
        "|---|---|---|---|---|---|---|",
    ]
    f = R.fmt_s
    for c in report["counts"]:
        n = f"{c['count']:,}"
        for label, ours, ref, inverse, limit in _COUNT_ROWS:
            if ours in c and ref in c:
                ratio = c[ref] / c[ours] if inverse else c[ours] / c[ref]
                lines.append(_row(label, n, f(c[ours]), f(c[ref]), ratio, limit))
        if "tiny_load_ms" not in c:
            continue
        lines.append(
            _row(
                "tiny verified load, ms (unrecorded)",
                n,
                f"{c['tiny_load_ms']:.2f} ms",
                "",
                c["tiny_load_ms"],
                "< 5",
            )
        )
        lines.append(
            _row(
                "tiny verified load, ms (audited)",
                n,
                f"{c['tiny_load_audited_ms']:.2f} ms",
                "",
                c["tiny_load_audited_ms"],
                "< 5",
            )
        )
        if "tiny_first_load_ms" in c:
            lines.append(
                f"| first tiny load of a process (verifies the stored manifest), informative "
                f"| {n} | {c['tiny_first_load_ms']:.0f} ms | | | | |"
            )
    for sz in report["sizes"]:
        g = f"{sz['size'] / R.GiB:g} GiB ({sz.get('copy') or '?'})"
        for key, what in (("load_s", "`load -o /dev/null`"), ("exec_s", "`exec -- true`")):
            lines.append(
                _row(
                    f"{what} vs `b3sum` of the object",
                    g,
                    f(sz[key]),
                    f(sz["b3sum_s"]),
                    sz[key] / sz["b3sum_s"],
                    "<= 1.25",
                )
            )
    if "audit" in report:
        a = report["audit"]
        lines.append(
            _row(
                "`audit verify`, seconds",
                f"{a['events']:,} events",
                f(a["audit_verify_s"]),
                "",
                a["audit_verify_s"],
                "< 10",
            )
        )
    svc = report.get("service")
    if svc:
        t = svc["tiny_service_ms"]
        lines.append(
            _row(
                "tiny load through the service, ms (median, audited)",
                "1 artifact",
                f"{t['median']:.2f} ms (p99 {t['p99']:.2f})",
                f"direct {svc['tiny_direct_ms']['median']:.2f} ms",
                t["median"],
                "< 5",
            )
        )
        cc = svc["concurrent"]
        lines.append(
            _row(
                "64 loaders through the service, audited loads/s",
                f"{cc.get('loads', '?')} loads",
                f"{cc['per_second']:,.0f}/s, {cc['events_lost']} lost",
                "",
                cc["per_second"],
                ">= 1000",
            )
        )
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = report["counts"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    ax = axes[0]
    for key, label in (
        ("import_s", "appliance import"),
        ("cp_sync_s", "cp -r + sync"),
        ("create_s", "appliance bundle create"),
        ("cp_b3sum_s", "cp -r + b3sum"),
        ("verify_s", "appliance verify"),
        ("b3sum_objects_s", "b3sum objects"),
    ):
        pts = [(c["count"], c[key]) for c in counts if key in c]
        if pts:
            ax.plot(*zip(*pts, strict=False), marker="o", label=label)
    ax.set_xlabel("artifacts in the bundle")
    ax.set_ylabel("seconds (median)")
    ax.set_title("small files: product vs reference")
    ax.legend(fontsize=8)
    ax = axes[1]
    tiny = [c for c in counts if "tiny_load_ms" in c]  # --only create has none
    ns = [c["count"] for c in tiny]
    ax.plot(ns, [c["tiny_load_ms"] for c in tiny], marker="o", label="tiny load (unrecorded)")
    ax.plot(ns, [c["tiny_load_audited_ms"] for c in tiny], marker="o", label="tiny load (audited)")
    ax.axhline(5, color="grey", ls="--", label="target 5 ms")
    ax.set_xlabel("artifacts in the bundle")
    ax.set_ylabel("ms (median, in process)")
    ax.set_title("a tiny verified load")
    ax.legend(fontsize=8)
    ax = axes[2]
    sizes = report["sizes"]
    gib = [s["size"] / R.GiB for s in sizes]
    for key, label in (
        ("b3sum_s", "b3sum object"),
        ("load_s", "load -o /dev/null"),
        ("exec_s", "exec -- true"),
    ):
        ax.plot(gib, [s[key] for s in sizes], marker="o", label=label)
    ax.set_xlabel("artifact size, GiB")
    ax.set_ylabel("seconds (median)")
    ax.set_title("big loads")
    ax.legend(fontsize=8)
    fig.suptitle(f"appliance scale run {report['when']} (load {report['load_before']})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--counts", default="1000,5000,20000")
    ap.add_argument("--sizes", default="1G,2G", help="big-load sizes (4G, 16G as disk allows)")
    ap.add_argument("--audit-events", type=int, default=1_000_000)
    ap.add_argument(
        "--tiny-counts",
        default="",
        help="bundle sizes for the tiny load alone (e.g. 100000: built once, not timed)",
    )
    ap.add_argument("--service", action="store_true", help="also bench/service_bench.py")
    ap.add_argument("--table-from", type=Path, help="only print the targets table of this JSON")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections ({','.join(SECTIONS)}); per count, import and "
        "verify share one import",
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=REPO / "bench" / "results",
        help="a folder: scale-<time>.json and scale-latest.json are written in it",
    )
    ap.add_argument("--plot", type=Path, default=REPO / "docs" / "scale.png")
    ap.add_argument("--plot-python", help="an interpreter with matplotlib (the bench extra)")
    ap.add_argument("--plot-from", type=Path, help="only draw the plot of this JSON report")
    args = ap.parse_args()
    if args.table_from is not None:
        print(table(json.loads(args.table_from.read_text())))
        return 0
    if args.plot_from is not None:
        plot(json.loads(args.plot_from.read_text()), args.plot)
        return 0
    only = frozenset(x for x in args.only.split(",") if x)
    if not only <= set(SECTIONS):
        log(f"--only: unknown section(s) {', '.join(sorted(only - set(SECTIONS)))}")
        return 2
    R.compile_product()
    b3sum = R.ensure_b3sum(log)
    if b3sum is None:
        log("b3sum is needed")
        return 2
    work = Path(tempfile.mkdtemp(prefix="appliance-scale-"))
    TRASH[:] = [work / "trash"]
    report: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_before": R.loadavg(),
        "machine": R.machine(),
        "argv": sys.argv,
        "counts": [],
        "sizes": [],
    }
    try:
        keys, template = R.setup_keys(work)
        for n in (int(x) for x in args.counts.split(",") if x and only & COUNT_SECTIONS):
            report["counts"].append(per_count(work, keys, template, n, b3sum, args.reps, only))
            log(json.dumps(report["counts"][-1]))
        for n in (int(x) for x in args.tiny_counts.split(",") if x):
            report["counts"].append(tiny_only(work, keys, template, n, args.reps))
            log(json.dumps(report["counts"][-1]))
        for s in (R.parse_size(x) for x in args.sizes.split(",") if x and "sizes" in only):
            report["sizes"].append(per_size(work, keys, template, s, b3sum, args.reps))
            log(json.dumps(report["sizes"][-1]))
        if args.audit_events and "audit" in only:
            report["audit"] = audit_log(work, template, args.audit_events, args.reps)
            log(json.dumps(report["audit"]))
        if args.service:
            import service_bench

            report["service"] = service_bench.run(work / "service", False, log)
    finally:
        report["load_after"] = R.loadavg()
        rmtree(work)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    (args.out / f"scale-{stamp}.json").write_text(json.dumps(report, indent=2))
    (args.out / "scale-latest.json").write_text(json.dumps(report, indent=2))
    if args.plot_python:
        subprocess.run(
            [args.plot_python, __file__, "--plot-from", str(args.out / "scale-latest.json")]
            + ["--plot", str(args.plot)],
            check=False,
        )
    else:
        try:
            plot(report, args.plot)
        except ImportError:
            log("matplotlib is missing (see --plot-python): no plot")
    log(json.dumps(report, indent=1))
    log(table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
