"""The launcher's head start on a load (``appliance.launch``), counted, not timed.

* The guess reads a ``load``/``exec`` command line as argparse does (home and reference),
  and makes none for other commands, help, or a load through the service.
* Run as the program, the launcher starts the hash before argparse and the CLI are
  imported, and the load takes that hash: one hash, claimed once, the record's bytes.
* A guess for another home than the one the parsed command line names (an abbreviated
  ``--hom=``: argparse takes it, the scan does not) is stopped and dropped; the load makes
  its own head start and hands over its own home's bytes.
* A head start taken for another reference is stopped, its descriptor closed.
* ``verify`` of the whole store: the launcher hashes its large immutable objects (none in
  a store of so many small ones that ``verify`` forks helpers), ``verify`` takes the hash
  for the very inode it opened, and a tampered object is still reported (exit 4).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest_load import Site, make_site
from test_headstart import BIG, OTHER, _hash_threads, _open_fds
from test_immutable import _kernel_allows

from appliance import headstart, launch
from appliance.cli.main import build_parser
from appliance.homepath import DB_FILE, default_home_path
from appliance.store import clear_immutable, find, object_path, set_immutable


def _unflag(root: Path) -> None:
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            clear_immutable(p)


@pytest.fixture
def sites(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Site, Site]]:
    """Two homes, each with an immutable ``big@1`` of other bytes."""
    if not _kernel_allows(tmp_path):
        pytest.skip("no CAP_LINUX_IMMUTABLE or no inode flags on this file system")
    monkeypatch.setenv("APPLIANCE_IMMUTABLE", "1")
    a, b = make_site(tmp_path / "a"), make_site(tmp_path / "b")
    a.ship({"big@1": BIG})
    b.ship({"big@1": OTHER})
    try:
        yield a, b
    finally:
        _unflag(tmp_path)


LINES = [
    ["--home", "H", "load", "m"],
    ["load", "m@2", "--home", "H", "-o", "out"],
    ["--home", "X", "load", "--home=H", "m"],
    ["--json", "load", "-o", "out", "m", "--digest", "ab" * 32],
    ["--witness", "w", "--anchor", "a", "exec", "m@1", "--refusal-status", "9"],
    ["load", "m"],
]
NO_GUESS = [
    ["list"],
    ["--home", "H", "verify", "m@1", "n"],  # several named records: no guess
    ["load", "--help"],
    ["load", "m", "--socket", "s"],
    ["load", "m", "--socket=s"],
    ["load"],
    ["--home", "load", "m"],  # the home is named "load"; no reference
]


@pytest.mark.parametrize("argv", LINES, ids=" ".join)
def test_the_guess_reads_a_load_as_argparse_does(argv: list[str]) -> None:
    args = build_parser(launch.command_name(argv)).parse_args(argv)
    want = (str(args.home) if args.home is not None else default_home_path(), args.ref)
    assert launch.guess_early([*argv, "--", "true"], os.environ) == want
    assert launch.guess_early(argv, {"APPLIANCE_SOCKET": "/run/s"}) is None


@pytest.mark.parametrize(
    "argv", [["--home", "H", "verify"], ["verify", "--home=H", "--json"], ["verify"]], ids=" ".join
)
def test_the_guess_reads_a_verify_of_the_whole_store(argv: list[str]) -> None:
    args = build_parser("verify").parse_args(argv)
    assert args.refs == []
    want = (str(args.home) if args.home is not None else default_home_path(), None)
    assert launch.guess_early(argv, os.environ) == want
    assert launch.guess_early(argv, {"APPLIANCE_SOCKET": "/run/s"}) == want  # not a load


@pytest.mark.parametrize(
    "argv", [["--home", "H", "verify", "m@1"], ["verify", "--json", "m"]], ids=" ".join
)
def test_the_guess_reads_a_verify_of_one_record(argv: list[str]) -> None:
    args = build_parser("verify").parse_args(argv)
    want = (str(args.home) if args.home is not None else default_home_path(), args.refs[0])
    assert launch.guess_early(argv, os.environ) == want


@pytest.mark.parametrize("argv", NO_GUESS, ids=" ".join)
def test_no_guess_for_other_commands_help_or_the_service(argv: list[str]) -> None:
    assert launch.guess_early(argv, {}) is None


_PROBE = """
import json, os, sys
from appliance import headstart
headstart.LARGE_MIN = 1 << 20  # the test's big object is 6 MiB
log = os.open(LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
def note(**kw):
    os.write(log, (json.dumps(kw) + "\\n").encode())
real_init, real_claim = headstart.BackgroundHash.__init__, headstart.HeadStart.claim
def init(self, fd, *, mapped):
    note(made=True, argparse="argparse" in sys.modules, cli="appliance.cli.main" in sys.modules)
    real_init(self, fd, mapped=mapped)
def claim(self, fd):
    got = real_claim(self, fd)
    note(claimed=got is not None)
    return got
headstart.BackgroundHash.__init__, headstart.HeadStart.claim = init, claim
from appliance.launch import entry
sys.argv = ["appliance", *ARGV]
sys.exit(entry())
"""


def _launch(
    tmp: Path, argv: list[str], env: dict[str, str], code: int = 0, out: list[str] | None = None
) -> list[dict[str, bool]]:
    log = tmp / "probe.log"
    script = f"LOG = {str(log)!r}\nARGV = {argv!r}\n" + _PROBE
    full = {**os.environ, **env}
    full.pop("APPLIANCE_WITNESS", None)
    p = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=full, timeout=60
    )
    assert p.returncode == code, p.stderr
    if out is not None:
        out.append(p.stdout)
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_the_launcher_hashes_before_argparse_and_the_load_takes_it(
    sites: tuple[Site, Site], tmp_path: Path
) -> None:
    a, _ = sites
    out = tmp_path / "out.bin"
    notes = _launch(tmp_path, ["--home", str(a.home), "load", "big", "-o", str(out)], {})
    assert notes == [{"made": True, "argparse": False, "cli": False}, {"claimed": True}]
    assert out.read_bytes() == BIG


def test_a_guess_for_another_home_is_dropped(sites: tuple[Site, Site], tmp_path: Path) -> None:
    a, b = sites
    out = tmp_path / "out.bin"
    # argparse reads the abbreviation as --home; the launcher's scan falls back on
    # $APPLIANCE_HOME, the other home, whose big@1 is other bytes.
    notes = _launch(
        tmp_path,
        [f"--hom={a.home}", "load", "big", "-o", str(out)],
        {"APPLIANCE_HOME": str(b.home)},
    )
    made = [n for n in notes if "made" in n]
    assert made[0] == {"made": True, "argparse": False, "cli": False}  # the launcher's
    assert len(made) == 2 and made[1]["cli"]  # dropped; the load made its own
    assert [n for n in notes if "claimed" in n] == [{"claimed": True}]
    assert out.read_bytes() == BIG


def test_a_head_start_for_another_reference_is_stopped_and_closed(
    sites: tuple[Site, Site],
) -> None:
    a, _ = sites
    before = _open_fds()
    headstart.start_early(str(a.home), DB_FILE, "big")
    assert headstart._early is not None  # hashing
    assert headstart.take_early(a.home, "big@2") is None
    assert headstart._early is None and _open_fds() == before and not _hash_threads()
    assert headstart.take_early(a.home, "big") is None  # taken once, whatever the answer
    headstart.start_early(str(a.home), DB_FILE, "big")
    assert headstart.take_early(a.home, None) is None  # made for a load, not for a verify
    assert _open_fds() == before and not _hash_threads()


def test_the_launcher_hashes_a_verify_s_large_object_and_verify_takes_it(
    sites: tuple[Site, Site], tmp_path: Path
) -> None:
    a, _ = sites
    notes = _launch(tmp_path, ["--home", str(a.home), "verify"], {})
    assert notes == [{"made": True, "argparse": False, "cli": False}, {"claimed": True}]


def test_the_launcher_hashes_the_object_of_a_verify_of_one_record_and_verify_takes_it(
    sites: tuple[Site, Site], tmp_path: Path
) -> None:
    a, _ = sites
    notes = _launch(tmp_path, ["--home", str(a.home), "verify", "big@1"], {})
    assert notes == [{"made": True, "argparse": False, "cli": False}, {"claimed": True}]
    # two records named: no guess, no head start
    (tmp_path / "two").mkdir()
    assert _launch(tmp_path / "two", ["--home", str(a.home), "verify", "big@1", "big"], {}) == []


@pytest.mark.parametrize("refs", [[], ["big@1"]], ids=["the whole store", "one record"])
def test_a_tampered_object_hashed_early_is_still_reported(
    sites: tuple[Site, Site], tmp_path: Path, refs: list[str]
) -> None:
    a, _ = sites
    db = a.h.db()
    path = object_path(a.h, find(db, "big").digest)
    db.conn.close()
    clear_immutable(path)  # a holder of CAP_LINUX_IMMUTABLE, which the model excludes
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.write(b"\xff" if BIG[:1] != b"\xff" else b"\x00")
    os.chmod(path, 0o444)
    assert set_immutable(path)
    out: list[str] = []
    argv = ["--home", str(a.home), "--json", "verify", *refs]
    notes = _launch(tmp_path, argv, {}, code=4, out=out)
    assert notes == [{"made": True, "argparse": False, "cli": False}, {"claimed": True}]
    (big,) = [r for r in json.loads(out[0])["results"] if r["name"] == "big"]
    assert big["status"] == "tampered" and big["code"] == "object_tampered", big


def test_verify_head_starts_only_large_immutable_objects_of_a_store_of_few_small_ones(
    sites: tuple[Site, Site], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _ = sites
    a.ship({"s1@1": b"one", "s2@1": b"two"})
    monkeypatch.setattr(headstart, "LARGE_MIN", 1 << 20)
    started = headstart.head_start(a.home, DB_FILE, None)
    assert started is not None  # big@1; the two small ones are not hashed early
    started.close()
    monkeypatch.setattr(headstart, "SMALL_MAX", 1)  # verify would fork its helpers
    assert headstart.head_start(a.home, DB_FILE, None) is None
    monkeypatch.setattr(headstart, "SMALL_MAX", 2)
    monkeypatch.setattr(headstart, "LARGE_MIN", 64 << 20)  # nothing that large
    assert headstart.head_start(a.home, DB_FILE, None) is None
    assert not _hash_threads()


def test_the_guess_s_thresholds_are_verify_s() -> None:
    from appliance import verify
    from bundles.hashing import ISOLATED_MIN

    assert headstart.SMALL_MAX == verify._HELPER_MIN - 1
    assert headstart.SMALL_SIZE == verify.SMALL_OBJECT
    assert headstart.LARGE_MIN == ISOLATED_MIN


_VERSION_PROBE = """
import sys
sys.argv = ["appliance", *sys.argv[1:]]
from appliance.launch import entry
code = entry()
heavy = {"argparse", "typing", "dataclasses", "pathlib", "json", "appliance.cli.main"}
print(code, sorted(heavy & set(sys.modules)))
"""


@pytest.mark.parametrize(
    ("argv", "out"),
    [(["--version"], "appliance "), (["--version", "--json"], '{"ok": true, "version": ')],
)
def test_the_launcher_answers_version_before_the_cli_is_imported(argv: list[str], out: str) -> None:
    """``appliance --version`` costs the interpreter's start-up, not the CLI's (scripts
    probe for the tool with it; docs/PERFORMANCE.md, row 7): no argparse, no typing.
    (``--json`` is written by the CLI's one JSON writer, ``Context``, imported for it.)"""
    p = subprocess.run(
        [sys.executable, "-c", _VERSION_PROBE, *argv], capture_output=True, text=True, check=True
    )
    first, last = p.stdout.splitlines()
    assert first.startswith(out)
    assert last.startswith("0 ")
    if "--json" not in argv:
        assert last == "0 []"
