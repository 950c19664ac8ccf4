"""A writer of the home plants a link (or a FIFO, a file) at ``objects/<fan-out>``,
or swaps ``staging`` or a verified staging file while an import runs.

From the attacker's side: the link points at a canary folder outside the home,
planted before an import, *during* one (after every artifact is staged and
verified, before the first rename into the store), before and during an import
that repairs a damaged object, and while the orphan sweep runs. The planting
"during" is done by a wrapper around the real CLI that plants the thing when
the import reaches that step (no hook in the core: the wrapper replaces the
importer's own reference to ``sync_home`` or ``sweep_orphans`` with one that
plants first). Each case must be exit 4 ``home_tampered``, with nothing created,
removed, chmod'ed or chattr'ed in the canary (its listing, modes, inode flags
and bytes compared), and the store as it was (``driver.snapshot``) once the
planted thing is taken away.

Before the store worked by descriptor, the "during" cases placed the verified
object inside the canary (``promote`` renamed by path through the link) or
gave ``io_error`` (a FIFO or file at the fan-out name).
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import blake3
import pytest

from appliance.store import inode_flags

from .driver import (
    M2,
    Result,
    Site,
    assert_unchanged,
    cli,
    cli_env,
    parse_json_stdout,
    snapshot,
)

TIMEOUT = 60

# Runs the real CLI; when the importer reaches $PLANT_HOOK ("sync_home": every
# artifact staged and verified, nothing promoted yet; "sweep_orphans": the sweep
# of unreferenced objects; "stage_artifact": the first artifact staged), it first
# moves $PLANT_AT aside to $PLANT_ASIDE (if there) and plants a $PLANT_KIND there (a
# link to $PLANT_TO, a FIFO or a file), or with "swap-staged" replaces each file in
# the folder $PLANT_AT by rename with one of other bytes.
_PLANTING_CLI = textwrap.dedent(
    """
    import os, sys
    import appliance.importer as importer
    env = os.environ
    at, hook, kind = env["PLANT_AT"], env["PLANT_HOOK"], env["PLANT_KIND"]
    real = getattr(importer, hook)
    def plant_then(*args, **kwargs):
        if not os.path.exists(env["PLANT_DONE"]):
            open(env["PLANT_DONE"], "w").close()
            if kind != "swap-staged" and os.path.lexists(at):
                os.rename(at, env["PLANT_ASIDE"])
            if kind == "swap-staged":  # each verified staging file for other bytes
                for name in os.listdir(at):
                    with open(os.path.join(at, name + ".x"), "wb") as f:
                        f.write(b"unverified bytes")
                    os.rename(os.path.join(at, name + ".x"), os.path.join(at, name))
            elif kind == "symlink":
                os.symlink(env["PLANT_TO"], at)
            elif kind == "fifo":
                os.mkfifo(at, 0o600)
            else:
                with open(at, "wb") as f:
                    f.write(b"not a folder")
        return real(*args, **kwargs)
    setattr(importer, hook, plant_then)
    from appliance.cli.main import main
    sys.exit(main(sys.argv[1:]))
    """
)


def canary_state(root: Path) -> dict[str, tuple[int, int | None, str]]:
    """Every entry under ``root`` (and ``root`` itself): its mode (type and permission
    bits), its inode flags (the immutable flag among them) and, for files, SHA-256."""
    out: dict[str, tuple[int, int | None, str]] = {}
    for dirpath, dirs, files in os.walk(root):
        for p in [Path(dirpath)] + [Path(dirpath) / n for n in dirs + files]:
            st = p.lstat()
            flags: int | None = None
            digest = ""
            if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
                fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW)
                try:
                    flags = inode_flags(fd)
                finally:
                    os.close(fd)
            if stat.S_ISREG(st.st_mode):
                digest = hashlib.sha256(p.read_bytes()).hexdigest()
            out[str(p.relative_to(root))] = (st.st_mode, flags, digest)
    return out


def make_canary(tmp_path: Path) -> Path:
    """A folder outside the home that looks like a fan-out folder: a file named as an
    unreferenced object (a sweep through the link would remove it), one writable."""
    canary = tmp_path / "canary"
    canary.mkdir()
    (canary / ("ab" * 32)).write_bytes(b"outside the home: must survive\n")
    (canary / "precious.txt").write_bytes(os.urandom(4096))
    (canary / "precious.txt").chmod(0o644)
    return canary


def fanouts(home: Path) -> set[str]:
    return set(os.listdir(home / "objects"))


def new_artifact(home: Path, *, same_fanout_as_stored: bool) -> tuple[bytes, str]:
    """Bytes for m@3.0 whose object folder is new, or one a stored object already uses."""
    used = fanouts(home)
    for i in range(10_000):
        data = b"model weights v3 %d " % i * 64
        digest = blake3.blake3(data).hexdigest()
        if (digest[:2] in used) is same_fanout_as_stored:
            return data, digest
    raise AssertionError("no such bytes")


def planting_cli(
    home: Path, tmp_path: Path, hook: str, at: Path, kind: str, to: Path, *args: str | Path
) -> Result:
    argv = [sys.executable, "-c", _PLANTING_CLI, "--home", str(home), "--json"]
    argv += [os.fspath(a) for a in args]
    env = cli_env(
        {
            "PLANT_AT": str(at),
            "PLANT_HOOK": hook,
            "PLANT_KIND": kind,
            "PLANT_TO": str(to),
            "PLANT_ASIDE": str(tmp_path / "aside"),
            "PLANT_DONE": str(tmp_path / "planted"),
        }
    )
    p = subprocess.run(argv, capture_output=True, env=env, timeout=TIMEOUT, check=False)
    out = parse_json_stdout(p.stdout, argv, p.stderr)
    stderr = p.stderr.decode(errors="replace")
    assert "Traceback" not in stderr, stderr
    assert (tmp_path / "planted").exists(), f"the import never reached {hook}: {out}"
    return Result(argv, p.returncode, out, stderr)


def unplant(at: Path, tmp_path: Path) -> None:
    """Take the planted thing away (as a name) and put back what was there."""
    os.unlink(at)
    if os.path.lexists(tmp_path / "aside"):
        os.rename(tmp_path / "aside", at)


def plant_before(at: Path, tmp_path: Path, kind: str, to: Path) -> None:
    if os.path.lexists(at):
        os.rename(at, tmp_path / "aside")
    if kind == "symlink":
        at.symlink_to(to)
    elif kind == "fifo":
        os.mkfifo(at, 0o600)
    else:
        at.write_bytes(b"not a folder")


def refused(r: Result) -> None:
    assert (r.rc, r.code) == (4, "home_tampered"), str(r)
    assert "objects/" in r.out["error"]["message"], str(r)


# --- (a) before an import, (b) during one ----------------------------------------------


@pytest.mark.parametrize("kind", ["symlink", "fifo", "file"])
@pytest.mark.parametrize("fanout", ["new", "stored"])
def test_fanout_planted_before_an_import(
    site: Site, home: Path, tmp_path: Path, fanout: str, kind: str
) -> None:
    canary = make_canary(tmp_path)
    before = canary_state(canary)
    data, digest = new_artifact(home, same_fanout_as_stored=fanout == "stored")
    bundle = site.repo.bundle({"m@3.0": data}, sequence=3).path
    at = home / "objects" / digest[:2]
    plant_before(at, tmp_path, kind, canary)
    refused(cli(home, "import", bundle, timeout=TIMEOUT))
    assert canary_state(canary) == before
    unplant(at, tmp_path)
    assert_unchanged(site.snapshot, snapshot(home))
    assert cli(home, "import", bundle, timeout=TIMEOUT).rc == 0  # control: the same bundle


@pytest.mark.parametrize("kind", ["symlink", "fifo", "file"])
@pytest.mark.parametrize("fanout", ["new", "stored"])
def test_fanout_planted_during_an_import_between_staging_and_promotion(
    site: Site, home: Path, tmp_path: Path, fanout: str, kind: str
) -> None:
    """Every artifact is staged and verified when the link appears: the verified object
    must not land in the link's target (the old ``promote`` renamed it there)."""
    canary = make_canary(tmp_path)
    before = canary_state(canary)
    data, digest = new_artifact(home, same_fanout_as_stored=fanout == "stored")
    bundle = site.repo.bundle({"m@3.0": data}, sequence=3).path
    at = home / "objects" / digest[:2]
    r = planting_cli(home, tmp_path, "sync_home", at, kind, canary, "import", bundle)
    refused(r)
    assert canary_state(canary) == before
    assert not os.path.lexists(canary / digest)
    unplant(at, tmp_path)
    assert_unchanged(site.snapshot, snapshot(home))
    assert cli(home, "import", bundle, timeout=TIMEOUT).rc == 0  # control: the same bundle


# --- (c) a repair import ------------------------------------------------------------------


def damage_m2(site: Site, home: Path) -> tuple[Path, bytes]:
    digest = blake3.blake3(M2).hexdigest()
    obj = home / "objects" / digest[:2] / digest
    obj.chmod(0o644)
    damaged = b"X" + M2[1:]
    obj.write_bytes(damaged)
    obj.chmod(0o444)
    return obj, damaged


def test_fanout_planted_before_a_repair_import(site: Site, home: Path, tmp_path: Path) -> None:
    obj, damaged = damage_m2(site, home)
    before_store = snapshot(home)
    canary = make_canary(tmp_path)
    before = canary_state(canary)
    bundle = site.repo.bundle({"m@2.0": M2}, sequence=3).path  # m@2.0 present, damaged
    at = obj.parent
    plant_before(at, tmp_path, "symlink", canary)
    refused(cli(home, "import", bundle, timeout=TIMEOUT))
    assert canary_state(canary) == before
    unplant(at, tmp_path)
    assert_unchanged(before_store, snapshot(home))
    assert obj.read_bytes() == damaged
    r = cli(home, "import", bundle, timeout=TIMEOUT)  # control: now it repairs
    assert r.rc == 0, str(r)
    assert [a["status"] for a in r.out["artifacts"]] == ["repaired"]
    assert obj.read_bytes() == M2


def test_fanout_planted_during_a_repair_import(site: Site, home: Path, tmp_path: Path) -> None:
    """The link appears once the verified copy is staged. The repair's rename comes after
    the commit of its ``repair`` event (by design, docs/WATCH.md): the rename is refused,
    nothing is written, chmod'ed or chattr'ed through the link, the damaged object stays
    where it was (refused by loads) and the next import repairs it."""
    obj, damaged = damage_m2(site, home)
    before_objects = snapshot(home).objects
    canary = make_canary(tmp_path)
    before = canary_state(canary)
    bundle = site.repo.bundle({"m@2.0": M2}, sequence=3).path
    at = obj.parent
    r = planting_cli(home, tmp_path, "sync_home", at, "symlink", canary, "import", bundle)
    refused(r)
    assert canary_state(canary) == before
    assert not os.path.lexists(canary / obj.name)
    unplant(at, tmp_path)
    after = snapshot(home)
    assert after.objects == before_objects  # the damaged object untouched, nothing added
    assert after.staging == []
    assert obj.read_bytes() == damaged
    again = site.repo.bundle({"m@2.0": M2}, sequence=4).path
    r = cli(home, "import", again, timeout=TIMEOUT)
    assert r.rc == 0, str(r)
    assert [a["status"] for a in r.out["artifacts"]] == ["repaired"]
    assert obj.read_bytes() == M2


# --- (d) the orphan sweep ---------------------------------------------------------------


@pytest.mark.parametrize("when", ["before", "during"])
def test_fanout_link_at_the_orphan_sweep(site: Site, home: Path, tmp_path: Path, when: str) -> None:
    """The canary holds a file named like an unreferenced object: a sweep through the link
    would remove it (or clear its flag). The link is refused instead."""
    canary = make_canary(tmp_path)
    before = canary_state(canary)
    used = fanouts(home)
    at = home / "objects" / next(f"{i:02x}" for i in range(256) if f"{i:02x}" not in used)
    bundle = site.repo.bundle({"m@3.0": b"model weights v3 " * 64}, sequence=3).path
    if when == "before":
        plant_before(at, tmp_path, "symlink", canary)
        r = cli(home, "import", bundle, timeout=TIMEOUT)
    else:
        r = planting_cli(home, tmp_path, "sweep_orphans", at, "symlink", canary, "import", bundle)
    refused(r)
    assert canary_state(canary) == before
    unplant(at, tmp_path)
    assert_unchanged(site.snapshot, snapshot(home))


# --- staging swapped while an import runs ---------------------------------------------


def test_staged_file_swapped_before_promotion_is_never_promoted(
    site: Site, home: Path, tmp_path: Path
) -> None:
    """The writer replaces each verified staging file (by rename) with other bytes: the
    promotion checks it is still the inode that was hashed, and refuses."""
    bundle = site.repo.bundle({"m@3.0": b"model weights v3 " * 64}, sequence=3).path
    staging = home / "staging"
    r = planting_cli(home, tmp_path, "sync_home", staging, "swap-staged", staging, "import", bundle)
    assert (r.rc, r.code) == (4, "home_tampered"), str(r)
    assert "swapped" in r.out["error"]["message"], str(r)
    assert_unchanged(site.snapshot, snapshot(home))


@pytest.mark.parametrize("hook", ["stage_artifact", "sync_home"])
def test_staging_swapped_for_a_link_during_an_import(
    site: Site, home: Path, tmp_path: Path, hook: str
) -> None:
    """A link at ``staging`` appears as the first artifact is staged, or once all are: the
    staging files go into the folder the import opened (never the link's target), and
    the promotion, reaching ``staging`` again by descriptor, refuses the link."""
    canary = make_canary(tmp_path)
    before = canary_state(canary)
    bundle = site.repo.bundle({"m@3.0": b"model weights v3 " * 64}, sequence=3).path
    staging = home / "staging"
    r = planting_cli(home, tmp_path, hook, staging, "symlink", canary, "import", bundle)
    assert (r.rc, r.code) == (4, "home_tampered"), str(r)
    assert canary_state(canary) == before
    unplant(staging, tmp_path)
    after = snapshot(home)
    assert after.listing == site.snapshot.listing
    assert after.objects == site.snapshot.objects
    r = cli(home, "import", bundle, timeout=TIMEOUT)  # control: cleans staging, imports
    assert r.rc == 0, str(r)
    assert os.listdir(staging) == []


# --- a repair over an object whose name holds a link, a FIFO or a device ---------------


@pytest.mark.parametrize("kind", ["symlink", "fifo", "device"])
def test_repair_replaces_a_planted_object_as_a_name(
    site: Site, home: Path, tmp_path: Path, kind: str
) -> None:
    """The link points at a canary file holding exactly the right bytes. The repair
    import counts the object as damaged and renames the verified copy over the name:
    the canary file is never opened for an ``ioctl``, chmod'ed or replaced, and the FIFO
    never blocks."""
    canary = make_canary(tmp_path)
    (canary / "precious.txt").write_bytes(M2)
    before = canary_state(canary)
    digest = blake3.blake3(M2).hexdigest()
    obj = home / "objects" / digest[:2] / digest
    obj.unlink()
    if kind == "symlink":
        obj.symlink_to(canary / "precious.txt")
    elif kind == "fifo":
        os.mkfifo(obj, 0o600)
    else:
        try:
            os.mknod(obj, stat.S_IFCHR | 0o600, os.makedev(1, 3))  # /dev/null's numbers
        except PermissionError:
            pytest.skip("this test cannot make device nodes here")
    bundle = site.repo.bundle({"m@2.0": M2}, sequence=3).path
    r = cli(home, "import", bundle, timeout=TIMEOUT)
    assert r.rc == 0, str(r)
    assert [a["status"] for a in r.out["artifacts"]] == ["repaired"]
    assert canary_state(canary) == before
    assert stat.S_ISREG(obj.lstat().st_mode) and obj.read_bytes() == M2
    assert stat.S_IMODE(obj.lstat().st_mode) == 0o444
