"""In-process measurements, run by ``bench/run.py`` in a fresh child process each time.

Each task times only the call it is about (start-up excluded) and prints one JSON
object on stdout; the parent adds the child's wall time and ``ru_maxrss``.

    worker.py hash PATH                  bundles.hashing.hash_path
    worker.py hash-many LISTFILE         bundles.hashing.hash_paths (one path a line)
    worker.py import HOME BUNDLE         appliance.importer.import_bundle
    worker.py load HOME NAME             appliance.load (a verified load, bytes not read)
    worker.py load-tiny HOME NAME N      appliance.load N times, audited and not: medians in ms
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _hash(path: str) -> dict[str, Any]:
    from bundles.hashing import hash_path

    t = time.perf_counter()
    digest, size = hash_path(path)
    return {"seconds": time.perf_counter() - t, "digest": digest, "size": size}


def _hash_many(listfile: str) -> dict[str, Any]:
    from bundles.hashing import hash_paths

    paths = Path(listfile).read_text().splitlines()
    t = time.perf_counter()
    results = hash_paths(paths)
    seconds = time.perf_counter() - t
    return {"seconds": seconds, "files": len(results), "bytes": sum(n for _, n in results)}


def _import(home: str, bundle: str) -> dict[str, Any]:
    from appliance.home import Home
    from appliance.importer import import_bundle

    t = time.perf_counter()
    result = import_bundle(Home(Path(home)), bundle)
    return {"seconds": time.perf_counter() - t, "bytes": result.bytes_verified}


def _load(home: str, name: str) -> dict[str, Any]:
    import appliance

    t = time.perf_counter()
    with appliance.load(name, home=home) as art:
        seconds = time.perf_counter() - t
        return {"seconds": seconds, "size": art.size}


def _load_tiny(home: str, name: str, count: str) -> dict[str, Any]:
    import appliance

    out: dict[str, Any] = {}
    for record in (False, True):
        t = time.perf_counter()
        with appliance.load(name, home=home, record=record) as art:  # warm-up
            art.read()
        if not record:  # the process's first: it verifies and parses the stored manifest
            out["first_ms"] = (time.perf_counter() - t) * 1000
        times = []
        for _ in range(int(count)):
            t = time.perf_counter()
            with appliance.load(name, home=home, record=record) as art:
                art.read()
            times.append(time.perf_counter() - t)
        key = "audited" if record else "unrecorded"
        out[f"{key}_ms"] = statistics.median(times) * 1000
        out[f"{key}_p90_ms"] = sorted(times)[int(len(times) * 0.9)] * 1000
    out["seconds"] = out["unrecorded_ms"] / 1000
    return out


TASKS: dict[str, Callable[..., dict[str, Any]]] = {
    "hash": _hash,
    "hash-many": _hash_many,
    "import": _import,
    "load": _load,
    "load-tiny": _load_tiny,
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in TASKS:
        print(__doc__, file=sys.stderr)
        return 2
    print(json.dumps(TASKS[argv[0]](*argv[1:])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
