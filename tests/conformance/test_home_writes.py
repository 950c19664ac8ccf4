"""Every file the appliance creates under the home: an unpredictable name, ``O_EXCL``.

The real CLI runs under a wrapper that records each ``os.open`` that may create
a file (``O_CREAT`` or ``O_TMPFILE``) and each ``os.mkdir``, with the folder it
lands in (resolved through ``/proc/self/fd`` when opened by ``dir_fd``), the
name and the flags; ``os.rename``/``os.replace``/``os.link`` into the home are
recorded too. Then ``init``, an import (a new artifact, and one repairing a
damaged object), ``trust apply``, a rollback and a load with ``-o`` run, and
every creation under the home must be ``O_CREAT | O_EXCL | O_NOFOLLOW`` (or an
unnamed ``O_TMPFILE | O_EXCL`` file) at a name holding at least 16 random hex
digits, so no name it writes can have been planted. SQLite's own files
(``appliance.db``, its journal) are opened by SQLite in C, not seen here: see
docs/SECURITY.md for why they are safe.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import blake3

from .driver import M2, SITE, Site, cli_env, parse_json_stdout

_RECORDING_CLI = textwrap.dedent(
    """
    import atexit, json, os, sys
    log, seen = os.environ["OPEN_LOG"], []
    def where(path, dir_fd):
        path = os.fsdecode(path)
        if dir_fd is not None and not path.startswith("/"):
            base = os.readlink(f"/proc/self/fd/{dir_fd}")
        else:
            base = os.getcwd()
        return os.path.normpath(os.path.join(base, path))
    real_open, real_mkdir = os.open, os.mkdir
    def rec_open(path, flags, mode=0o777, *, dir_fd=None):
        if flags & os.O_CREAT or flags & os.O_TMPFILE == os.O_TMPFILE:
            seen.append(["open", where(path, dir_fd), flags])
        return real_open(path, flags, mode, dir_fd=dir_fd)
    def rec_mkdir(path, mode=0o777, *, dir_fd=None):
        seen.append(["mkdir", where(path, dir_fd), 0])
        return real_mkdir(path, mode, dir_fd=dir_fd)
    def rec_move(op, real):
        def move(src, dst, *a, src_dir_fd=None, dst_dir_fd=None, **k):
            seen.append([op, where(dst, dst_dir_fd), 0])
            return real(src, dst, *a, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd, **k)
        return move
    os.open, os.mkdir = rec_open, rec_mkdir
    for op in ("rename", "replace", "link"):
        setattr(os, op, rec_move(op, getattr(os, op)))
    atexit.register(lambda: open(log, "a").write(json.dumps(seen) + "\\n"))
    from appliance.cli.main import main
    sys.exit(main(sys.argv[1:]))
    """
)

RANDOM = re.compile(r"[0-9a-f]{16}")


def run(home: Path, log: Path, *args: str | os.PathLike[str]) -> dict[str, Any]:
    argv = [sys.executable, "-c", _RECORDING_CLI, "--home", str(home), "--json"]
    argv += [os.fspath(a) for a in args]
    p = subprocess.run(
        argv, capture_output=True, env=cli_env({"OPEN_LOG": str(log)}), timeout=120, check=False
    )
    out = parse_json_stdout(p.stdout, argv, p.stderr)
    assert p.returncode == 0, (out, p.stderr.decode(errors="replace")[-2000:])
    return out


def test_every_file_created_under_the_home_is_o_excl_at_a_random_name(
    site: Site, tmp_path: Path
) -> None:
    home, log = tmp_path / "fresh-home", tmp_path / "opens.jsonl"
    repo = site.repo
    run(home, log, "init", "--root-key", repo.pub("root"), "--site", SITE)
    from bundles.documents import AddKey

    ops = [AddKey(repo.key("pub").public, "publisher", "models")]
    run(home, log, "trust", "apply", repo.write(repo.trust_update(2, ops), "trust"))
    run(home, log, "import", repo.bundle({"m@1.0": b"one " * 500}, sequence=1).path)
    run(home, log, "import", repo.bundle({"m@2.0": M2}, sequence=2).path)
    digest = blake3.blake3(M2).hexdigest()
    obj = home / "objects" / digest[:2] / digest
    obj.chmod(0o644)
    obj.write_bytes(b"X" + M2[1:])  # damaged: the next import of m@2.0 repairs it
    out = run(home, log, "import", repo.bundle({"m@2.0": M2}, sequence=3).path)
    assert [a["status"] for a in out["artifacts"]] == ["repaired"]
    run(home, log, "load", "m", "-o", tmp_path / "out.bin")
    root = os.path.realpath(home)
    created = [
        (op, path, flags)
        for line in log.read_text().splitlines()
        for op, path, flags in json.loads(line)
        if path == root or path.startswith(root + "/")
    ]
    kinds = {op for op, _, _ in created}
    assert {"open", "mkdir", "rename", "link"} <= kinds, kinds  # the recorder saw them all
    for op, path, flags in created:
        rel = os.path.relpath(path, root)
        name = os.path.basename(path)
        if op == "open" and flags & os.O_TMPFILE == os.O_TMPFILE:
            assert flags & os.O_EXCL, (rel, oct(flags))  # unnamed, never linkable
            assert rel == "staging", rel
        elif op == "open":
            need = os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
            assert flags & need == need, (rel, oct(flags))
            assert RANDOM.search(name.split(".", 1)[-1]), rel  # random beyond any digest
        elif op == "mkdir":
            # the home itself (init), the fixed folders, made by mkdirat and then opened
            # O_NOFOLLOW | O_DIRECTORY; or init's private folder, by a random name
            assert (
                rel in (".", "objects", "staging")
                or re.fullmatch(r"objects/[0-9a-f]{2}", rel)
                or (rel.startswith(".appliance.db.init.") and RANDOM.search(rel))
            ), rel
        else:
            # moved into place from a random name: an object (its digest), the lock,
            # the database (init), a witness
            assert re.fullmatch(r"objects/[0-9a-f]{2}/[0-9a-f]{64}", rel) or rel in (
                "lock",
                "appliance.db",
            ), (op, rel)
