#!/usr/bin/env python3
"""Benchmarks against the reference tools, side by side in one run (docs/PERFORMANCE.md).

    .venv/bin/python bench/run.py            # full run: a 2 GiB file, 20,000 small files
    .venv/bin/python bench/run.py --quick    # small sizes: proves the harness works (~20 s)

Every pair runs in the same run, interleaved (the order rotates each repetition),
several times, page cache warm; the report gives medians and ratios against the
targets of docs/PERFORMANCE.md. Each measured command runs in a fresh child process; wall time is
measured here, user/system time and peak memory (``ru_maxrss``) come from
``wait4``; "in process" figures come from ``bench/worker.py``, which times only
the call itself. Before each command that writes a large file, dirty pages are
flushed (``sync``, not timed) so that no case pays for another's write-back.

Writes ``bench-<time>.json`` and ``.md`` under ``--out`` (default
``bench/results/``) and copies them to ``latest.json`` / ``latest.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
WORKER = REPO / "bench" / "worker.py"
TUI_LATENCY = REPO / "bench" / "tui_latency.py"
STREAM = "bench"
GiB = 1 << 30
MiB = 1 << 20

# name -> (comparison, limit); the targets table of docs/PERFORMANCE.md.
TARGETS = {
    "hash": ("ours/b3sum throughput >=", 0.9),
    "load": ("CLI load time / b3sum time <=", 1.25),
    "import": ("import time / cp time <=", 1.1),
    "import_vs_b3cp": ("import time / (b3sum then cp) time <=", 1.0),
    "small": ("ours/b3sum files per second >=", 1.5),
    "tiny_load": ("in-process verified load, ms <", 5.0),
    "startup": ("appliance --version / python -c 'import blake3' <=", 2.5),
    "tui": ("key press while hashing (p95 handled), ms <=", 100.0),
    "service_tiny": ("tiny load through appliance serve, audited, median ms <", 5.0),
    "service_64": ("64 loaders through appliance serve, audited loads/s >=", 1000.0),
}


FAILED: dict[str, str] = {}  # case name -> why it was left out
GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None

# --- running and timing ---------------------------------------------------------------


@dataclass
class Sample:
    wall: float
    user: float
    sys: float
    maxrss_kib: int
    inner: dict[str, Any] | None = None


@dataclass
class Case:
    """One command of a comparison; ``metric`` picks the figure the ratio uses."""

    name: str
    argv: list[str]
    cwd: Path | None = None
    prep: Callable[[], None] | None = None
    after: Callable[[], None] | None = None
    inner: bool = False  # the child prints JSON with "seconds" (bench/worker.py)
    rss: bool = True  # peak memory through GNU time (start-up cases skip its extra exec)
    inputs: Sequence[Path] = ()  # read (not timed) before every run: keeps the cache warm
    stdout_null: bool = True
    figure: str = ""  # the headline figure (GB/s, files/s, ms) for the table
    samples: list[Sample] = field(default_factory=list)

    def seconds(self) -> list[float]:
        if self.inner:
            return [float(s.inner["seconds"]) for s in self.samples if s.inner]
        return [s.wall for s in self.samples]

    def median(self) -> float:
        return statistics.median(self.seconds())

    def summary(self) -> dict[str, Any]:
        secs = self.seconds()
        walls = [s.wall for s in self.samples]
        return {
            "name": self.name,
            "argv": self.argv,
            "metric": "in-process seconds" if self.inner else "wall seconds",
            "median_s": statistics.median(secs),
            "min_s": min(secs),
            "max_s": max(secs),
            "runs": len(secs),
            "wall_median_s": statistics.median(walls),
            "user_median_s": statistics.median(s.user for s in self.samples),
            "sys_median_s": statistics.median(s.sys for s in self.samples),
            "maxrss_mib": (
                max(s.maxrss_kib for s in self.samples) / 1024 if self.rss and GNU_TIME else None
            ),
            "samples_s": secs,
        }


def _copy_home(template: Path, home: Path) -> None:
    """A fresh home from a template, with its own trust anchor (appliance.anchor)."""
    from appliance.anchor import copy_anchor

    shutil.copytree(template, home)
    copy_anchor(template, home)


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), e.get("PYTHONPATH", "")) if p)
    for k in ("APPLIANCE_WITNESS", "APPLIANCE_HOME"):
        e.pop(k, None)
    return e


def run_once(case: Case) -> Sample:
    # The page cache must be warm for every run, not just the first: this kind of VM
    # runs DAMON, which pages out what has not been touched for about a minute.
    warm(case.inputs)
    if case.prep is not None:
        case.prep()
    argv = case.argv
    rss_file = None
    if case.rss and GNU_TIME:
        # ru_maxrss from wait4 would include this harness's own memory (the child is
        # forked from it before exec); GNU time forks the command from a small process.
        fd, rss_file = tempfile.mkstemp(prefix="bench-rss-")
        os.close(fd)
        argv = [GNU_TIME, "-q", "-f", "%M", "-o", rss_file, *argv]
    t = time.perf_counter()
    proc = subprocess.Popen(
        argv,
        cwd=case.cwd,
        env=env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE if case.inner or not case.stdout_null else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    out, err = proc.stdout.read() if proc.stdout else b"", b""
    if proc.stderr is not None:
        err = proc.stderr.read()
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
    if proc.returncode != 0:
        why = err.decode(errors="replace")[-2000:]
        raise RuntimeError(f"{' '.join(case.argv)} exited {proc.returncode}: {why}")
    if case.after is not None:
        case.after()
    maxrss = ru.ru_maxrss
    if rss_file is not None:
        try:
            maxrss = int(Path(rss_file).read_text().split()[-1])
        except (OSError, ValueError, IndexError):
            pass
        os.unlink(rss_file)
    inner = json.loads(out.decode().strip().splitlines()[-1]) if case.inner else None
    return Sample(wall, ru.ru_utime, ru.ru_stime, maxrss, inner)


def measure(cases: list[Case], reps: int, log: Callable[[str], None]) -> None:
    """Interleave the cases, rotating the order each repetition; one warm-up round first.

    A case whose warm-up run fails is reported in ``FAILED`` and left out.
    """
    for case in list(cases):
        try:
            run_once(case)
        except RuntimeError as e:
            log(f"    {case.name}: FAILED, left out: {str(e)[-300:]}")
            FAILED[case.name] = str(e)[-2000:]
            cases.remove(case)
    for rep in range(reps):
        k = rep % len(cases)
        for case in list(cases[k:]) + list(cases[:k]):
            case.samples.append(run_once(case))
    for case in cases:
        log(f"    {case.name:<46} median {case.median():8.4f} s  ({case.samples[-1].wall:.3f})")


def quiet(argv: Sequence[str | os.PathLike[str]], cwd: Path | None = None) -> str:
    p = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env(), capture_output=True, text=True, check=False
    )
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} exited {p.returncode}: {p.stderr[-2000:]}")
    return p.stdout


def sync() -> None:
    """Flush dirty pages and wait (up to 10 s) until the disk has taken them, so that no
    case pays for the previous one's write-back (or its discards: ext4 here mounts with
    ``discard``, and every run deletes a 2 GiB file)."""
    os.sync()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with open("/proc/meminfo") as f:
                info = {k: v for k, _, v in (line.partition(":") for line in f)}
            pending = int(info["Dirty"].split()[0]) + int(info["Writeback"].split()[0])
        except (OSError, KeyError, ValueError, IndexError):
            break
        if pending < 16 * 1024:  # KiB
            break
        time.sleep(0.05)
    time.sleep(0.5)


def rm(path: Path) -> Callable[[], None]:
    def go() -> None:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    return go


def both(*fns: Callable[[], None]) -> Callable[[], None]:
    def go() -> None:
        for f in fns:
            f()

    return go


# --- tools and environment ---------------------------------------------------------------


def ensure_b3sum(log: Callable[[str], None]) -> str | None:
    """``b3sum`` on PATH, installed from Debian's packages when missing (needs root or sudo)."""
    found = shutil.which("b3sum")
    if found:
        return found
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    log("b3sum is missing: installing Debian's package b3sum")
    for cmd in (["apt-get", "install", "-y", "-q", "b3sum"], ["apt-get", "update", "-q"]):
        subprocess.run(prefix + cmd, capture_output=True, check=False)
        found = shutil.which("b3sum")
        if found:
            return found
    subprocess.run(prefix + ["apt-get", "install", "-y", "-q", "b3sum"], capture_output=True)
    return shutil.which("b3sum")


def compile_product() -> None:
    """Byte-compile the product as an install would (pip compiles at install; the frozen
    binary carries its bytecode). Under ``PYTHONDONTWRITEBYTECODE`` a checkout has no
    ``.pyc`` and every measured CLI start would compile every module again (~55 ms)."""
    import compileall

    for pkg in ("appliance", "bundles", "tui"):
        compileall.compile_dir(REPO / pkg, quiet=1)


def cli() -> list[str]:
    script = Path(sys.executable).parent / "appliance"
    return [str(script)] if script.exists() else [sys.executable, "-m", "appliance"]


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in lscpu.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("Model name", "CPU(s)", "Thread(s) per core", "Flags"):
                value = value.strip()
                if key.strip() == "Flags":
                    value = " ".join(f for f in value.split() if f.startswith("avx512f"))
                    key = "AVX-512"
                info[key.strip()] = value or "no"
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
        info["RAM"] = f"{kib / (1 << 20):.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    info["kernel"] = platform.release()
    info["python"] = platform.python_version()
    try:
        from importlib.metadata import version

        info["blake3"] = version("blake3")
    except Exception:  # noqa: BLE001 - informational only
        info["blake3"] = "?"
    for tool in ("b3sum", "sha256sum", "cp"):
        path = shutil.which(tool)
        if path:
            out = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
            info[tool] = out.splitlines()[0] if out else "?"
    try:
        info["commit"] = quiet(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]).strip()
    except (RuntimeError, OSError):
        info["commit"] = "?"
    info["filesystem"] = subprocess.run(
        ["findmnt", "-no", "FSTYPE", "-T", tempfile.gettempdir()],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return info


# --- data -------------------------------------------------------------------------------


def write_file(path: Path, size: int, seed: int = 1) -> None:
    """Incompressible bytes (a random 16 MiB block, each copy shifted)."""
    rng = random.Random(seed)
    block = rng.randbytes(16 * MiB)
    with open(path, "wb") as f:
        done = 0
        i = 0
        while done < size:
            k = (i * 4099) % len(block)
            chunk = (block[k:] + block[:k])[: size - done]
            f.write(chunk)
            done += len(chunk)
            i += 1


def write_small_files(root: Path, count: int, seed: int = 2) -> list[str]:
    """``count`` files of 4 to 64 KiB in folders of 200; returns paths relative to ``root``."""
    rng = random.Random(seed)
    pool = rng.randbytes(2 * MiB)
    names = []
    for i in range(count):
        rel = f"d{i // 200:03d}/f{i:05d}.bin"
        p = root / rel
        if i % 200 == 0:
            p.parent.mkdir(parents=True, exist_ok=True)
        size = rng.randint(4 * 1024, 64 * 1024)
        start = rng.randrange(0, len(pool) - size)
        p.write_bytes(i.to_bytes(8, "little") + pool[start : start + size - 8])
        names.append(rel)
    return names


def warm(paths: Sequence[Path]) -> None:
    buf = bytearray(8 * MiB)
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass


@dataclass
class Site:
    work: Path
    keys: Path
    template: Path  # an initialised home with the publisher key trusted
    big: Path
    big_bundle: Path
    tiny_bundle: Path
    load_home: Path


def setup_keys(work: Path) -> tuple[Path, Path]:
    """Root and publisher keys under ``work/keys`` and a home template whose trust names
    the publisher for ``STREAM`` (trust version 2): (keys, template)."""
    app = cli()
    keys = work / "keys"
    for name in ("root", "pub"):
        quiet([*app, "key", "new", name, "--out", keys])
    template = work / "home-template"
    quiet([*app, "--home", template, "init", "--root-key", keys / "root.pub", "--site", "bench"])
    update = work / "trust-0002.json"
    quiet(
        [
            *app,
            "trust",
            "update",
            update,
            "--version",
            "2",
            "--key",
            keys / "root.key",
            "--add-key",
            keys / "pub.pub",
            "--role",
            "publisher",
            "--stream",
            STREAM,
        ]
    )
    quiet([*app, "--home", template, "trust", "apply", update])
    return keys, template


def make_site(work: Path, size: int, log: Callable[[str], None]) -> Site:
    app = cli()
    keys, template = setup_keys(work)
    big = work / "big.bin"
    log(f"writing {size / GiB:.3g} GiB test file and its bundle (the media folder)")
    write_file(big, size)
    tiny = work / "tiny.bin"
    tiny.write_bytes(random.Random(3).randbytes(4096))
    media = work / "media"
    media.mkdir()
    bundles = []
    for seq, (ref, path) in enumerate((("big@1", big), ("tiny@1", tiny)), start=1):
        out = media / f"bundle-{seq}"
        quiet(
            [
                *app,
                "bundle",
                "create",
                out,
                "--stream",
                STREAM,
                "--sequence",
                str(seq),
                "--key",
                keys / "pub.key",
                "--any-site",
                f"{ref}={path}",
            ]
        )
        bundles.append(out)
    load_home = work / "home-load"
    _copy_home(template, load_home)
    for b in bundles:
        quiet([*app, "--home", load_home, "import", b])
    return Site(work, keys, template, big, bundles[0], bundles[1], load_home)


def object_file(home: Path, name: str) -> Path:
    doc = json.loads(quiet([*cli(), "--home", home, "--json", "list"]))
    for a in doc["artifacts"]:
        if a["name"] == name:
            d = str(a["digest"]["blake3"])
            return home / "objects" / d[:2] / d
    raise RuntimeError(f"{name} is not in {home}")


def media_files(bundle: Path) -> list[Path]:
    return sorted(p for p in bundle.rglob("*") if p.is_file() and p.name != "manifest.dsse.json")


# --- sections ---------------------------------------------------------------------------


def py(*args: str | os.PathLike[str]) -> list[str]:
    return [sys.executable, *map(str, args)]


def bench_hash(site: Site, b3sum: str | None, reps: int, log: Callable[[str], None]) -> Any:
    f = site.big
    warm([f])
    cases = [
        Case("ours: hash_path (in process)", py(WORKER, "hash", f), inner=True),
        Case("ours: hash_path, fresh process (start-up incl.)", py(WORKER, "hash", f)),
        Case("sha256sum", ["sha256sum", str(f)]),
    ]
    if b3sum:
        cases += [
            Case("b3sum (all threads)", [b3sum, str(f)]),
            Case("b3sum --num-threads 1", [b3sum, "--num-threads", "1", str(f)]),
        ]
    for c in cases:
        c.inputs = [f]
    measure(cases, reps, log)
    return cases


def bench_import(
    site: Site, b3sum: str | None, reps: int, log: Callable[[str], None]
) -> list[Case]:
    files = media_files(site.big_bundle)
    warm(files)
    app = cli()
    work = site.work
    home = work / "home-import"
    dest = work / "cp-dest"

    def rm_home() -> None:
        # The store's objects carry the immutable flag (root, ext4): clear it first, or
        # rmtree leaves the home behind and the next run's copy of the template fails.
        from appliance.store import clear_immutable

        for p in (home / "objects").rglob("*"):
            if p.is_file():
                clear_immutable(p)
        rm(home)()

    def fresh_home() -> None:
        rm_home()
        _copy_home(site.template, home)
        sync()

    def fresh_dest() -> None:
        rm(dest)()
        dest.mkdir()
        sync()

    cp = ["cp", *map(str, files), str(dest)]
    cases = [
        Case(
            "appliance import (CLI, one pass)",
            [*app, "--home", str(home), "import", str(site.big_bundle)],
            prep=fresh_home,
            after=rm_home,
        ),
        Case(
            "ours: import_bundle (in process)",
            py(WORKER, "import", home, site.big_bundle),
            prep=fresh_home,
            after=rm_home,
            inner=True,
        ),
        Case("cp (alone)", cp, prep=fresh_dest, after=rm(dest)),
        Case(
            "cp + sync FILE (fsynced, like the import)",
            ["sh", "-c", 'cp "$@" && cd "$0" && sync ./*', str(dest), *map(str, files), str(dest)],
            prep=fresh_dest,
            after=rm(dest),
        ),
    ]
    if b3sum:
        cases.append(
            Case(
                "b3sum then cp",
                [
                    "sh",
                    "-c",
                    f'"{b3sum}" "$@" >/dev/null && cp "$@" "$0"',
                    str(dest),
                    *map(str, files),
                ],
                prep=fresh_dest,
                after=rm(dest),
            )
        )
    for c in cases:
        c.inputs = files
    measure(cases, reps, log)
    return cases


def bench_small(
    site: Site, count: int, b3sum: str | None, reps: int, log: Callable[[str], None]
) -> list[Case]:
    root = site.work / "small"
    root.mkdir(exist_ok=True)
    log(f"writing {count} small files (4 to 64 KiB)")
    names = write_small_files(root, count)
    listfile = site.work / "small.txt"
    listfile.write_text("\n".join(str(root / n) for n in names) + "\n")
    warm([root / n for n in names])
    cases = [Case("ours: hash_paths (in process)", py(WORKER, "hash-many", listfile), inner=True)]
    cases.append(Case("ours: hash_paths, fresh process", py(WORKER, "hash-many", listfile)))
    if b3sum:
        cases.append(Case("b3sum FILES...", [b3sum, *names], cwd=root))
    for c in cases:
        c.inputs = [root / n for n in names]
    measure(cases, reps, log)
    return cases


def load_available() -> bool:
    p = subprocess.run([*cli(), "load", "--help"], capture_output=True, env=env(), check=False)
    return p.returncode == 0


def bench_load(
    site: Site, b3sum: str | None, reps: int, tiny_count: int, log: Callable[[str], None]
) -> tuple[list[Case], list[Case], bool]:
    app = cli()
    home = str(site.load_home)
    obj = object_file(site.load_home, "big")
    warm([obj])
    has_load = load_available()
    cases = [Case("appliance verify big (CLI)", [*app, "--home", home, "verify", "big"])]
    if has_load:
        cases += [
            Case("appliance load big > /dev/null (CLI)", [*app, "--home", home, "load", "big"]),
            Case(
                "appliance exec big -- true (CLI)",
                [*app, "--home", home, "exec", "big", "--", "true"],
            ),
            Case("ours: appliance.load (in process)", py(WORKER, "load", home, "big"), inner=True),
        ]
    else:
        log("    appliance load is missing: measuring verify only")
    if b3sum:
        cases.append(Case("b3sum OBJECT", [b3sum, str(obj)]))
    for c in cases:
        c.inputs = [obj]
    measure(cases, reps, log)
    tiny: list[Case] = []
    if has_load:
        tiny = [
            Case(
                "ours: appliance.load tiny (in process)",
                py(WORKER, "load-tiny", home, "tiny", str(tiny_count)),
                inner=True,
            )
        ]
        measure(tiny, max(1, reps // 2), log)
    return cases, tiny, has_load


def bench_startup(b3sum: str | None, reps: int, log: Callable[[str], None]) -> list[Case]:
    cases = [
        Case("appliance --version (Python entry)", [*cli(), "--version"]),
        Case("python -c 'import blake3'", py("-c", "import blake3")),
        Case("python -c pass", py("-c", "pass")),
        Case(
            "appliance import --help (loads its command module)",
            [*cli(), "import", "--help"],
        ),
    ]
    frozen = REPO / "dist" / "appliance"
    if frozen.exists() and os.access(frozen, os.X_OK):
        cases.append(Case("dist/appliance --version (frozen)", [str(frozen), "--version"]))
    if b3sum:
        cases.append(Case("b3sum --version", [b3sum, "--version"]))
    for case in cases:
        case.rss = False
    measure(cases, reps, log)
    return cases


def textual_imported() -> bool:
    code = (
        "import sys, io, contextlib\nfrom appliance.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()): main(['--version'])\n"
        "print('textual' in sys.modules)"
    )
    return quiet(py("-c", code)).strip() == "True"


def bench_tui(log: Callable[[str], None], quick: bool) -> dict[str, Any]:
    if not TUI_LATENCY.exists():
        log("    bench/tui_latency.py: not available")
        return {"available": False, "note": "not available (bench/tui_latency.py is missing)"}
    argv = py(TUI_LATENCY, "--json", *(["--quick"] if quick else []))
    p = subprocess.run(argv, capture_output=True, text=True, env=env(), timeout=600, check=False)
    doc: dict[str, Any] = {"available": True, "exit_code": p.returncode, "argv": argv}
    lines = p.stdout.strip().splitlines()
    try:
        doc["result"] = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        doc["output"] = p.stdout[-2000:]
    if p.returncode != 0:
        doc["stderr"] = p.stderr[-2000:]
    log(f"    tui_latency.py exit {p.returncode}: {lines[-1] if lines else ''}")
    return doc


# --- report -----------------------------------------------------------------------------


def by_name(cases: Sequence[Case]) -> dict[str, Case]:
    return {c.name: c for c in cases}


def verdict(key: str, value: float | None) -> dict[str, Any]:
    what, limit = TARGETS[key]
    if value is None:
        return {"target": what, "limit": limit, "value": None, "met": None}
    met = (
        value >= limit
        if ">=" in what
        else (value < limit if "<" in what and "<=" not in what else value <= limit)
    )
    return {"target": what, "limit": limit, "value": value, "met": met}


def ratio(a: Case | None, b: Case | None) -> float | None:
    if a is None or b is None:
        return None
    return a.median() / b.median()


def fmt_s(x: float) -> str:
    return f"{x * 1000:.1f} ms" if x < 1 else f"{x:.3f} s"


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"# Benchmark results ({report['mode']}, {report['started']})",
        "",
        f"Machine: {m.get('Model name', '?')}, {m.get('CPU(s)', '?')} CPUs, "
        f"{m.get('RAM', '?')} RAM, "
        f"kernel {m.get('kernel')}, {m.get('filesystem', '?')}; AVX-512: {m.get('AVX-512', '?')}. "
        f"Python {m.get('python')}, blake3 {m.get('blake3')}, {m.get('b3sum', 'b3sum missing')}, "
        f"{m.get('cp', '')}. Commit {m.get('commit')}.",
        f"Load average before/after: {report['load_before']} / {report['load_after']}. "
        f"Repetitions: {report['reps']} (medians), warm page cache. Command: `{report['command']}`",
        "",
        "| # | case | median | spread (min-max) | figure | peak RSS |",
        "|---|---|---|---|---|---|",
    ]
    for sec in report["sections"]:
        for c in sec["cases"]:
            fig = c.get("figure", "")
            rss = "-" if c["maxrss_mib"] is None else f"{c['maxrss_mib']:.0f} MiB"
            lines.append(
                f"| {sec['id']} | {c['name']} | {fmt_s(c['median_s'])} | "
                f"{fmt_s(c['min_s'])}-{fmt_s(c['max_s'])} | {fig} | {rss} |"
            )
    lines += ["", "| target | limit | measured | met |", "|---|---|---|---|"]
    for key, v in report["targets"].items():
        val = "n/a" if v["value"] is None else f"{v['value']:.3g}"
        met = {True: "yes", False: "**no**", None: "n/a"}[v["met"]]
        lines.append(f"| {key}: {v['target']} | {v['limit']} | {val} | {met} |")
    lines += ["", f"Notes: {'; '.join(report['notes'])}" if report["notes"] else ""]
    return "\n".join(lines) + "\n"


def scale_table(path: Path) -> str:
    """The second-round targets table of the last ``bench/scale.py`` run (its own
    ``table``), as docs/PERFORMANCE.md shows it; empty when there was none."""
    if not path.exists():
        return ""
    sys.path.insert(0, str(REPO / "bench"))
    import scale

    report = json.loads(path.read_text())
    return f"\n## Second-round targets ({path.name})\n\n" + scale.table(report)


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": MiB, "G": GiB}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    return int(float(t[:-1]) * units[t[-1]]) if t[-1] in units else int(t)


def loadavg() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes: 64 MiB, 500 small files")
    ap.add_argument("--size", type=parse_size, help="large file size (default 2G; quick 64M)")
    ap.add_argument("--small-files", type=int, help="how many small files (20000; quick 500)")
    ap.add_argument("--reps", type=int, help="repetitions per case (default 5; quick 2)")
    ap.add_argument("--workdir", type=Path, help="scratch folder (default: a new one in /tmp)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    ap.add_argument(
        "--only",
        default="hash,import,small,load,startup,tui,service",
        help="comma-separated sections (hash,import,small,load,startup,tui,service)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    ap.add_argument(
        "--scale-table",
        type=Path,
        help="only print the second-round targets table of this bench/scale.py JSON",
    )
    args = ap.parse_args(argv)
    if args.scale_table is not None:
        print(scale_table(args.scale_table))
        return 0
    size = args.size or (64 * MiB if args.quick else 2 * GiB)
    count = args.small_files or (500 if args.quick else 20_000)
    reps = args.reps or (2 if args.quick else 5)
    only = set(args.only.split(","))

    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    started = time.strftime("%Y-%m-%d %H:%M:%S")
    load_before = loadavg()
    compile_product()
    b3sum = ensure_b3sum(log)
    if b3sum is None:
        log("b3sum is not available: its rows are left out")
    base = args.workdir or Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="appliance-bench-", dir=base))
    notes: list[str] = []
    sections: list[dict[str, Any]] = []
    targets: dict[str, Any] = {}
    try:
        log(f"scratch folder {work}")
        site = make_site(work, size, log)
        mb = size / 1e6
        if "hash" in only:
            log(f"1. hashing one {size / MiB:.0f} MiB file")
            cs = bench_hash(site, b3sum, reps, log)
            n = by_name(cs)
            for c in cs:
                c.figure = f"{mb / c.median() / 1000:.2f} GB/s"
            ours, ref = n["ours: hash_path (in process)"], n.get("b3sum (all threads)")
            r = ratio(ref, ours)
            targets["hash"] = verdict("hash", r)
            sections.append(section(1, "hash a large file", cs))
        if "import" in only:
            log(f"2. import of a {size / MiB:.0f} MiB artifact vs cp")
            cs = bench_import(site, b3sum, reps, log)
            n = by_name(cs)
            for c in cs:
                c.figure = f"{mb / c.median() / 1000:.2f} GB/s"
            imp = n["appliance import (CLI, one pass)"]
            targets["import"] = verdict("import", ratio(imp, n["cp (alone)"]))
            targets["import_vs_b3cp"] = verdict(
                "import_vs_b3cp", ratio(imp, n.get("b3sum then cp"))
            )
            targets["import_fsynced_vs_cp_sync"] = {
                "target": "import / (cp + sync FILE), informative",
                "limit": None,
                "value": ratio(imp, n["cp + sync FILE (fsynced, like the import)"]),
                "met": None,
            }
            sections.append(section(2, "import vs cp", cs))
        if "small" in only:
            log(f"3. {count} small files")
            cs = bench_small(site, count, b3sum, reps, log)
            n = by_name(cs)
            for c in cs:
                c.figure = f"{count / c.median():,.0f} files/s"
            r = ratio(n.get("b3sum FILES..."), n["ours: hash_paths (in process)"])
            targets["small"] = verdict("small", r)
            sections.append(section(3, "small files", cs))
            rm(work / "small")()
        if "load" in only:
            log(f"4. verified load of the {size / MiB:.0f} MiB artifact")
            cs, tiny, has_load = bench_load(site, b3sum, reps, 20 if args.quick else 200, log)
            n = by_name(cs)
            for c in cs:
                c.figure = f"{mb / c.median() / 1000:.2f} GB/s"
            if has_load:
                targets["load"] = verdict(
                    "load", ratio(n["appliance load big > /dev/null (CLI)"], n.get("b3sum OBJECT"))
                )
                targets["load_exec"] = {
                    **verdict(
                        "load",
                        ratio(n["appliance exec big -- true (CLI)"], n.get("b3sum OBJECT")),
                    ),
                    "target": "CLI exec time / b3sum time <=",
                }
                targets["load_verify"] = {  # the target names "verify or load"
                    **verdict(
                        "load",
                        ratio(n["appliance verify big (CLI)"], n.get("b3sum OBJECT")),
                    ),
                    "target": "CLI verify of the object / b3sum time <=",
                }
                t = tiny[0]
                inner = t.samples[-1].inner or {}
                audited = statistics.median(
                    float((s.inner or {}).get("audited_ms", 0)) for s in t.samples
                )
                t.figure = f"{t.median() * 1000:.2f} ms; audited {audited:.2f} ms"
                targets["tiny_load"] = verdict("tiny_load", t.median() * 1000)
                targets["tiny_load_audited"] = {
                    **verdict("tiny_load", audited),
                    "target": "in-process verified load with its audit event, ms <",
                }
                del inner
                cs = cs + tiny
            else:
                notes.append("appliance load is missing (appliance/cli/cmd_load.py)")
                targets["load"] = verdict(
                    "load", ratio(n["appliance verify big (CLI)"], n.get("b3sum OBJECT"))
                )
                targets["load"]["target"] = "CLI verify time / b3sum time <= (load missing)"
            sections.append(section(4, "verified load", cs))
        if "startup" in only:
            log("5. start-up")
            cs = bench_startup(b3sum, 3 if args.quick else 20, log)
            n = by_name(cs)
            targets["startup"] = verdict(
                "startup",
                ratio(n["appliance --version (Python entry)"], n["python -c 'import blake3'"]),
            )
            if "dist/appliance --version (frozen)" in n:
                targets["startup_frozen"] = {
                    **verdict(
                        "startup",
                        ratio(
                            n["dist/appliance --version (frozen)"], n["python -c 'import blake3'"]
                        ),
                    ),
                    "target": "dist/appliance --version / python -c 'import blake3' <=",
                }
            if textual_imported():
                notes.append("appliance --version imports textual")
            sections.append(section(5, "start-up", cs))
        if "tui" in only:
            log("7. TUI key-press latency while hashing")
            tui = bench_tui(log, args.quick)
            value = None
            res = tui.get("result")
            if isinstance(res, dict) and isinstance(res.get("handled_ms"), dict):
                value = float(res["handled_ms"]["p95"])  # key sent -> action ran, p95
            targets["tui"] = verdict("tui", value)
            targets["tui"]["detail"] = tui
            if not tui["available"]:
                notes.append("TUI latency: not available (bench/tui_latency.py is missing)")
        if "service" in only:  # issue 11: bench/service_bench.py
            log("8. loads through the loader service")
            sys.path.insert(0, str(REPO / "bench"))
            import service_bench

            svc = service_bench.run(work / "service", args.quick, log)
            targets["service_tiny"] = verdict("service_tiny", svc["tiny_service_ms"]["median"])
            targets["service_tiny"]["detail"] = svc
            targets["service_64"] = verdict("service_64", svc["concurrent"]["per_second"])
            notes.append(
                f"service: tiny load median {svc['tiny_service_ms']['median']:.2f} ms, p99 "
                f"{svc['tiny_service_ms']['p99']:.2f} ms (direct in process, same run: "
                f"{svc['tiny_direct_ms']['median']:.2f} ms); 64 loaders "
                f"{svc['concurrent']['per_second']:,.0f}/s, events lost "
                f"{svc['concurrent']['events_lost']}"
            )
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    memory = {
        f"{s['id']}: {c['name']}": c["maxrss_mib"]
        for s in sections
        for c in s["cases"]
        if c["maxrss_mib"] is not None
    }
    report = {
        "mode": "quick" if args.quick else "full",
        "started": started,
        "command": " ".join(["bench/run.py", *(argv if argv is not None else sys.argv[1:])]),
        "size_bytes": size,
        "small_files": count,
        "reps": reps,
        "load_before": load_before,
        "load_after": loadavg(),
        "machine": machine(),
        "sections": sections,
        "peak_memory_mib": memory,
        "targets": targets,
        "notes": notes
        + [f"{k}: FAILED ({v.strip().splitlines()[-1][:200]})" for k, v in FAILED.items()],
        "failed": FAILED,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    text = json.dumps(report, indent=2)
    md = markdown(report) + scale_table(args.out / "scale-latest.json")
    for stem in (f"bench-{report['mode']}-{stamp}", "latest"):
        (args.out / f"{stem}.json").write_text(text)
        (args.out / f"{stem}.md").write_text(md)
    print(md)
    log(f"wrote {args.out / 'latest.json'} and latest.md")
    return 0


def section(num: int, title: str, cases: Sequence[Case]) -> dict[str, Any]:
    out = []
    for c in cases:
        s = c.summary()
        s["figure"] = c.figure
        out.append(s)
    return {"id": num, "title": title, "cases": out}


if __name__ == "__main__":
    sys.exit(main())
