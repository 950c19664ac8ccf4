"""A writer of the home plants links and special files: refused, nothing outside touched.

From the attacker's side of the threat model (docs/SECURITY.md) (a writer that can modify files in
the store): a symbolic link, a FIFO, a directory or regular file of the wrong
kind, or a device node at each fixed path of the home (``appliance.db`` and its
journal, ``lock``, ``objects``, ``objects/xx``, ``staging``), at a store object
and at the witness. Each case runs the real CLI in a subprocess with a timeout
(a hang fails the case) and asserts the specific error code and exit code, that
the canary directory a link points at is intact (before the fix, a link at
``staging`` made the next import empty it, as root), and, once the planted
thing is taken away and the original put back, that ``list``, ``verify``,
``trust show``, the object files and the audit history are unchanged.

Refusals with ``home_tampered`` are not audited: the home is not trusted to
record them (its database may be the planted thing).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from .driver import (
    Result,
    Site,
    assert_unchanged,
    cli,
    copy_home,
    rebind_witness,
    snapshot,
)

TIMEOUT = 60  # a hang (a FIFO opened for reading) fails the case instead of the run


def fingerprint(root: Path) -> dict[str, str]:
    """Every entry under ``root``: relative path -> kind and, for files, SHA-256."""
    out: dict[str, str] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(root))
            if stat.S_ISREG(st.st_mode):
                out[rel] = "file " + hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                out[rel] = f"mode {stat.S_IFMT(st.st_mode):o}"
    return out


def make_canary(tmp_path: Path) -> Path:
    canary = tmp_path / "canary"
    (canary / "sub").mkdir(parents=True)
    (canary / "precious.txt").write_text("outside the home: must survive\n")
    (canary / "sub" / "keep.bin").write_bytes(os.urandom(4096))
    return canary


# --- what to plant -----------------------------------------------------------------


def plant(kind: str, where: Path, canary: Path, expects_dir: bool) -> None:
    if kind == "symlink":
        where.symlink_to(canary if expects_dir else canary / "precious.txt")
    elif kind == "fifo":
        os.mkfifo(where, 0o600)
    elif kind == "directory":
        where.mkdir()
    elif kind == "file":
        where.write_bytes(b"not what the appliance put here\n")
    elif kind == "device":
        try:
            os.mknod(where, stat.S_IFCHR | 0o600, os.makedev(1, 3))  # /dev/null's numbers
        except PermissionError:
            pytest.skip("this test cannot make device nodes here")
    else:
        raise AssertionError(kind)


def unplant(where: Path) -> None:
    """Remove what was planted, never following it."""
    if where.is_symlink() or not where.is_dir():
        where.unlink()
    else:
        shutil.rmtree(where)


def wrong_kinds(expects_dir: bool) -> list[str]:
    return ["symlink", "fifo", "file" if expects_dir else "directory", "device"]


@dataclass(frozen=True)
class Fixed:
    rel: str  # "objects/XX" is the fan-out folder of the active m@2.0
    expects_dir: bool


FIXED = [
    Fixed("appliance.db", False),
    Fixed("appliance.db-journal", False),
    Fixed("lock", False),
    Fixed("objects", True),
    Fixed("objects/XX", True),
    Fixed("staging", True),
]


def digest_of(site: Site, ref: str) -> str:
    name, _, version = ref.partition("@")
    for a in site.snapshot.listing:
        if a["name"] == name and a["version"] == version:
            return str(a["digest"]["blake3"])
    raise AssertionError(ref)


def resolve(site: Site, home: Path, rel: str) -> Path:
    return home / rel.replace("XX", digest_of(site, "m@2.0")[:2])


def run_then_restore(
    site: Site,
    home: Path,
    tmp_path: Path,
    where: Path,
    kinds: list[str],
    expects_dir: bool,
    commands: list[Callable[[], Result]],
    expected: tuple[int, str],
) -> None:
    """For each kind: move the original aside, plant, run each command (it must refuse
    with ``expected``), check the canary, restore. Then check that nothing changed."""
    canary = make_canary(tmp_path)
    before_canary = fingerprint(canary)
    aside = tmp_path / "aside"
    for kind in kinds:
        had_original = os.path.lexists(where)
        if had_original:
            os.rename(where, aside)
        plant(kind, where, canary, expects_dir)
        for run in commands:
            r = run()
            assert (r.rc, r.code) == expected, f"{kind} at {where}: {r}"
            assert fingerprint(canary) == before_canary, f"{kind}: outside the home changed"
        unplant(where)
        if had_original:
            os.rename(aside, where)
    assert_unchanged(site.snapshot, snapshot(home, site.witness))


def next_bundle(site: Site) -> Path:
    return site.repo.bundle({"m@3.0": b"model weights v3 " * 64}, sequence=3).path


@pytest.mark.parametrize("fixed", FIXED, ids=[f.rel.replace("/", "_") for f in FIXED])
def test_planted_fixed_path_refuses_import(
    site: Site, home: Path, tmp_path: Path, fixed: Fixed
) -> None:
    """A link, a FIFO, the wrong kind (a folder for a file, a file for a folder) and a
    device node in turn at one fixed path: each refused, then the home is as it was."""
    where = resolve(site, home, fixed.rel)
    bundle = next_bundle(site)
    run_then_restore(
        site,
        home,
        tmp_path,
        where,
        wrong_kinds(fixed.expects_dir),
        fixed.expects_dir,
        [lambda: cli(home, "import", bundle, timeout=TIMEOUT)],
        (4, "home_tampered"),
    )


def test_staging_link_never_empties_its_target_even_on_refusals_and_dry_runs(
    site: Site, home: Path, tmp_path: Path
) -> None:
    """The issue's case: a link at staging and every kind of import, a good one, a
    refused one, a dry run of a path that does not exist, and a read-only command."""
    good = next_bundle(site)
    bad = site.repo.bundle({"m@3.0": b"x"}, sequence=3, signers=("nobody",)).path
    commands = [
        lambda: cli(home, "import", good, timeout=TIMEOUT),
        lambda: cli(home, "import", bad, timeout=TIMEOUT),
        lambda: cli(home, "import", "--dry-run", tmp_path / "missing", timeout=TIMEOUT),
        lambda: cli(home, "load", "m", "-o", tmp_path / "out.bin", timeout=TIMEOUT),
    ]
    where = home / "staging"
    run_then_restore(site, home, tmp_path, where, ["symlink"], True, commands, (4, "home_tampered"))
    assert not (tmp_path / "out.bin").exists()


def test_control_the_next_bundle_imports_into_an_untouched_home(site: Site, home: Path) -> None:
    r = cli(home, "import", next_bundle(site), timeout=TIMEOUT)
    assert r.rc == 0, str(r)


def test_link_inside_staging_is_removed_as_a_name_never_followed(
    site: Site, home: Path, tmp_path: Path
) -> None:
    """Leftovers planted inside staging (a link to the canary, a FIFO, a folder holding a
    link) are removed by the next import without touching what the links point at."""
    canary = make_canary(tmp_path)
    before = fingerprint(canary)
    staging = home / "staging"
    (staging / "leftover.part").symlink_to(canary)
    (staging / "file.part").symlink_to(canary / "precious.txt")
    os.mkfifo(staging / "fifo.part")
    (staging / "nested").mkdir()
    (staging / "nested" / "deeper").symlink_to(canary / "sub")
    r = cli(home, "import", next_bundle(site), timeout=TIMEOUT)
    assert r.rc == 0, str(r)
    assert fingerprint(canary) == before
    assert os.listdir(staging) == []


def test_unreferenced_link_in_an_object_folder_is_swept_as_a_name(
    site: Site, home: Path, tmp_path: Path
) -> None:
    canary = make_canary(tmp_path)
    before = fingerprint(canary)
    folder = resolve(site, home, "objects/XX")
    (folder / ("ab" * 32)).symlink_to(canary)
    os.mkfifo(folder / ("cd" * 32))
    r = cli(home, "import", next_bundle(site), timeout=TIMEOUT)
    assert r.rc == 0, str(r)
    assert fingerprint(canary) == before
    assert not os.path.lexists(folder / ("ab" * 32))
    assert not os.path.lexists(folder / ("cd" * 32))


# --- a store object replaced --------------------------------------------------------


@pytest.mark.parametrize("kind", ["symlink", "fifo", "directory", "device"])
def test_replaced_object_is_object_tampered_for_load_exec_and_verify(
    site: Site, home: Path, tmp_path: Path, kind: str
) -> None:
    digest = digest_of(site, "m@2.0")
    where = home / "objects" / digest[:2] / digest
    canary = make_canary(tmp_path)
    if kind == "symlink":
        # the strongest case: the link points at a file holding exactly the right bytes
        (canary / "precious.txt").chmod(0o644)
        shutil.copyfile(where, canary / "precious.txt")
    out = tmp_path / "out.bin"
    commands = [
        lambda: cli(home, "load", "m", "-o", out, timeout=TIMEOUT),
        lambda: cli(home, "exec", "m", "--", "true", timeout=TIMEOUT),
        lambda: cli(home, "verify", "m@2.0", timeout=TIMEOUT),
    ]
    before_canary = fingerprint(canary)
    aside = tmp_path / "aside"
    os.rename(where, aside)
    plant(kind, where, canary, False)
    for run in commands:
        r = run()
        assert r.rc == 4, str(r)
        if r.argv[-2:] == ["verify", "m@2.0"]:
            [res] = r.out["results"]
            assert (res["status"], res["code"]) == ("tampered", "object_tampered"), res
        else:
            assert r.code == "object_tampered", str(r)
        assert fingerprint(canary) == before_canary
    assert not out.exists()
    unplant(where)
    os.rename(aside, where)
    assert_unchanged(site.snapshot, snapshot(home))


# --- the witness ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["symlink", "fifo", "directory", "device"])
def test_witness_replaced_is_witness_unreadable(wsite: Site, tmp_path: Path, kind: str) -> None:
    """Even a link to a copy of the genuine witness is refused: its name must hold a file."""
    assert wsite.witness is not None
    root = tmp_path / "w"
    root.mkdir()
    home = copy_home(wsite.home, root / "home")
    witness = root / "witness.json"
    shutil.copyfile(wsite.witness, witness)
    rebind_witness(witness, home)  # the copied witness belongs to the copied home
    canary = make_canary(tmp_path)
    shutil.copyfile(witness, canary / "precious.txt")  # a link to a valid witness
    before_canary = fingerprint(canary)
    bundle = next_bundle(wsite)
    aside = tmp_path / "aside.json"
    os.rename(witness, aside)
    plant(kind, witness, canary, False)
    for args in (("load", "m", "-o", tmp_path / "o.bin"), ("import", bundle)):
        r = cli(home, *args, witness=witness, timeout=TIMEOUT)
        assert (r.rc, r.code) == (4, "witness_unreadable"), str(r)
        assert fingerprint(canary) == before_canary
    unplant(witness)
    os.rename(aside, witness)
    after = snapshot(home, witness)
    assert after.listing == wsite.snapshot.listing
    assert after.objects == wsite.snapshot.objects
    assert after.staging == []
    # the witness file is what it was, and a good import still goes through it
    r = cli(home, "import", bundle, witness=witness, timeout=TIMEOUT)
    assert r.rc == 0, str(r)
    assert stat.S_ISREG(witness.lstat().st_mode)
    # no temp left (the lock beside the witness stays: it is taken again by the next write)
    assert sorted(p.name for p in root.iterdir()) == [".witness.json.lock", "home", "witness.json"]


# --- init into a planted home ---------------------------------------------------------


@pytest.mark.parametrize("rel", ["objects", "staging"])
@pytest.mark.parametrize("kind", ["symlink", "fifo", "file"])
def test_init_refuses_planted_layout(site: Site, tmp_path: Path, rel: str, kind: str) -> None:
    home = tmp_path / "fresh"
    home.mkdir()
    canary = make_canary(tmp_path)
    before = fingerprint(canary)
    plant(kind, home / rel, canary, True)
    r = cli(home, "init", "--root-key", site.repo.pub("root"), timeout=TIMEOUT)
    assert (r.rc, r.code) == (4, "home_tampered"), str(r)
    assert fingerprint(canary) == before
    assert not os.path.lexists(home / "appliance.db")


def test_init_refuses_a_link_at_the_database(site: Site, tmp_path: Path) -> None:
    home = tmp_path / "fresh"
    home.mkdir()
    canary = make_canary(tmp_path)
    (home / "appliance.db").symlink_to(canary / "new.db")  # dangling: init would create it
    r = cli(home, "init", "--root-key", site.repo.pub("root"), timeout=TIMEOUT)
    assert r.rc != 0, str(r)
    assert not (canary / "new.db").exists()
    assert sorted(os.listdir(home)) == ["appliance.db"]
