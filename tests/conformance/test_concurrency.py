"""Concurrency: racing imports, and loads during imports and rollbacks. Never torn state.

* Two imports started together: each succeeds or gets ``lock_held`` (exit 3);
  with ``--wait`` both finish; the same bundle twice: one import, one replay.
* Loads in a loop while an import and a rollback change the active version:
  every load either refuses cleanly or hands over bytes whose BLAKE3 is the
  digest it reports, and that digest is one of the versions that were active.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from bundles.hashing import new_hasher

from .driver import M1, M2, Site, cli, cli_argv, cli_env, ok, parse_json_stdout, snapshot


def _start(home: Path, *args: str | os.PathLike[str]) -> tuple[list[str], subprocess.Popen[bytes]]:
    argv = cli_argv(home, *args)
    return argv, subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env()
    )


def _finish(argv: list[str], proc: subprocess.Popen[bytes]) -> tuple[int, dict[str, object]]:
    out, err = proc.communicate(timeout=120)
    return proc.returncode, parse_json_stdout(out, argv, err)


def _consistent(home: Path) -> None:
    snap = snapshot(home)
    assert snap.verify[0] == 0, snap.verify
    assert snap.staging == []
    ok(cli(home, "audit", "verify"))


def test_two_imports_race(site: Site, home: Path) -> None:
    a = site.repo.bundle({"m@3.0": os.urandom(4 << 20)}, sequence=3)
    b = site.repo.bundle(
        {"o@2.0": os.urandom(4 << 20)}, stream="other", sequence=2, signers=("other",)
    )
    outcomes = []
    for _ in range(3):
        pa, pb = _start(home, "import", a.path), _start(home, "import", b.path)
        ra, rb = _finish(*pa), _finish(*pb)
        for rc, out in (ra, rb):
            assert rc == 0 or (rc, out["error"]["code"]) in {  # type: ignore[index]
                (3, "lock_held"),
                (1, "sequence_replayed"),
            }, out
        outcomes.append((ra[0], rb[0]))
        _consistent(home)
    listed = {(x["name"], x["version"]) for x in ok(cli(home, "list"))["artifacts"]}
    # three rounds: each bundle got in at least once it held the lock
    assert ("m", "3.0") in listed and ("o", "2.0") in listed, outcomes


def test_two_imports_with_wait_both_finish(site: Site, home: Path) -> None:
    a = site.repo.bundle({"m@3.0": os.urandom(8 << 20)}, sequence=3)
    b = site.repo.bundle(
        {"o@2.0": os.urandom(8 << 20)}, stream="other", sequence=2, signers=("other",)
    )
    pa, pb = _start(home, "import", "--wait", a.path), _start(home, "import", "--wait", b.path)
    assert _finish(*pa)[0] == 0 and _finish(*pb)[0] == 0
    _consistent(home)


def test_same_bundle_twice_with_wait(site: Site, home: Path) -> None:
    a = site.repo.bundle({"m@3.0": os.urandom(8 << 20)}, sequence=3)
    results = [_finish(*p) for p in [_start(home, "import", "--wait", a.path) for _ in range(2)]]
    codes = sorted(
        "ok" if rc == 0 else out["error"]["code"]  # type: ignore[index]
        for rc, out in results
    )
    assert codes == ["ok", "sequence_replayed"], results
    _consistent(home)


def _hash(data: bytes) -> str:
    h = new_hasher(len(data))
    h.update(data)
    return str(h.hexdigest())


def test_loads_during_import_and_rollback_never_torn(
    site: Site, home: Path, tmp_path: Path
) -> None:
    m3 = os.urandom(16 << 20)
    digests = {_hash(M1): "1.0", _hash(M2): "2.0", _hash(m3): "3.0"}
    bundle = site.repo.bundle({"m@3.0": m3}, sequence=3)
    auth = site.repo.write(site.repo.rollback_auth("m", "1.0"), "auth")
    writers = [_start(home, "import", "--wait", bundle.path)]
    seen: dict[str, int] = {}
    refusals: dict[str, int] = {}
    deadline = time.monotonic() + 60
    i = 0
    rolled = False
    while time.monotonic() < deadline:
        out_file = tmp_path / f"load-{i}.bin"
        r = cli(home, "load", "m", "-o", out_file)
        i += 1
        if r.rc == 0:
            data = out_file.read_bytes()
            digest = r.out["digest"]["blake3"]  # type: ignore[index]
            assert _hash(data) == digest, "handed-over bytes differ from the reported digest"
            assert digest in digests, "bytes of no version that was ever active"
            seen[digests[digest]] = seen.get(digests[digest], 0) + 1
            out_file.unlink()
        else:
            assert r.rc in (1, 3, 4) and r.code != "internal_error", str(r)
            refusals[str(r.code)] = refusals.get(str(r.code), 0) + 1
        if not rolled and writers[0][1].poll() is not None:
            writers.append(_start(home, "rollback", "m", "--authorization", auth, "--wait"))
            rolled = True
        if rolled and all(p.poll() is not None for _, p in writers) and i > 4:
            break
    for argv, proc in writers:
        rc, out = _finish(argv, proc)
        assert rc == 0, out
    assert not refusals, f"loads refused while the store changed: {refusals}"
    assert ok(cli(home, "load", "m", "-o", tmp_path / "final.bin"))["version"] == "1.0"
    _consistent(home)
    assert sum(seen.values()) >= 2, seen
