"""Every artifact refusal: the bytes on media are not the bytes that were signed.

Bundles hold several artifacts; the bad one is the LAST in manifest order and
the smallest (the importer hashes the largest first), so the others have been
read, hashed and staged by the time it is found. Each refusal: its own code,
exit 1, no new object, no staging leftover, the rest of the state unchanged,
the refusal in the audit log; for directory and tar bundles.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conformance.driver import manifest_of, pack_tar, staging_files
from import_env import Env, Snapshot

from appliance.home import Home
from appliance.importer import import_bundle
from bundles.errors import ArtifactTooLongError, DigestMismatchError, RejectedError

BIG = os.urandom(2 << 20)
MEDIUM = os.urandom(512 << 10)
SMALL_C = os.urandom(4096)
SMALL_D = os.urandom(4096)
ARTIFACTS = {"alpha@1": BIG, "beta@1": MEDIUM, "gamma@1": SMALL_C, "delta@1": SMALL_D}
LAST = "delta"  # last in manifest order and (with gamma) the smallest


def _file(bundle: Path, name: str) -> Path:
    art = manifest_of(bundle).artifact(name)
    assert art is not None
    return bundle / art.path


def flip_bit(bundle: Path) -> None:
    f = _file(bundle, LAST)
    raw = bytearray(f.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    f.write_bytes(bytes(raw))


def truncate(bundle: Path) -> None:
    f = _file(bundle, LAST)
    os.truncate(f, f.stat().st_size - 1)


def lengthen(bundle: Path) -> None:
    with open(_file(bundle, LAST), "ab") as f:
        f.write(b"\0" * 4096)


def swap(bundle: Path) -> None:
    a, b = _file(bundle, "gamma"), _file(bundle, LAST)
    da, db = a.read_bytes(), b.read_bytes()
    a.write_bytes(db)
    b.write_bytes(da)


def remove(bundle: Path) -> None:
    _file(bundle, LAST).unlink()


def add_unlisted(bundle: Path) -> None:
    (_file(bundle, LAST).parent / "payload.sh").write_bytes(b"#!/bin/sh\necho extra\n")


DEFECTS: dict[str, tuple[Callable[[Path], None], str]] = {
    "flipped-bit": (flip_bit, "digest_mismatch"),
    "truncated": (truncate, "artifact_truncated"),
    "longer-than-signed": (lengthen, "artifact_too_long"),
    "swapped": (swap, "digest_mismatch"),
    "missing": (remove, "artifact_missing"),
    "extra-unlisted": (add_unlisted, "unlisted_file"),
}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Env, Snapshot]:
    env = Env(tmp_path_factory.mktemp("artifacts-template"))
    env.import_ok(env.bundle({"base@1": b"already in the store\n"}, sequence=1))
    return env, env.snapshot()


@pytest.fixture
def env(template: tuple[Env, Snapshot], tmp_path: Path) -> Env:
    return template[0].clone(tmp_path / "env")


def broken_bundle(env: Env, defect: Callable[[Path], None], tar: bool, **kw: object) -> Path:
    bundle = env.bundle(ARTIFACTS, sequence=2, **kw)  # type: ignore[arg-type]
    names = [a.name for a in manifest_of(bundle).artifacts]
    assert names[-1] == LAST
    defect(bundle)
    return pack_tar(env.path("broken.tar"), bundle) if tar else bundle


def assert_refused(env: Env, before: Snapshot, code: str, bundle: Path) -> None:
    env.expect_refusal(code, "import", bundle)
    after = env.snapshot()
    assert after.store_part() == before.store_part()  # no new object file, no record
    assert after.trust == before.trust
    assert staging_files(env.home) == []
    new = after.events_after(before)
    assert [(e["type"], e["outcome"], e["code"]) for e in new] == [("import", "rejected", code)]


@pytest.mark.parametrize("tar", [False, True], ids=["dir", "tar"])
@pytest.mark.parametrize("defect", list(DEFECTS))
def test_artifact_refused(template: tuple[Env, Snapshot], env: Env, defect: str, tar: bool) -> None:
    change, code = DEFECTS[defect]
    assert_refused(env, template[1], code, broken_bundle(env, change, tar))


@pytest.mark.parametrize("tar", [False, True], ids=["dir", "tar"])
def test_split_artifact_with_a_flipped_bit_in_its_last_part(
    template: tuple[Env, Snapshot], env: Env, tar: bool
) -> None:
    bundle = env.bundle(ARTIFACTS, sequence=2, part_size=1 << 20)
    alpha = manifest_of(bundle).artifact("alpha")
    assert alpha is not None and len(alpha.parts) == 2
    last_part = bundle / alpha.parts[-1].path
    raw = bytearray(last_part.read_bytes())
    raw[-1] ^= 0x01
    last_part.write_bytes(bytes(raw))
    if tar:
        bundle = pack_tar(env.path("broken.tar"), bundle)
    assert_refused(env, template[1], "digest_mismatch", bundle)


def test_control_the_intact_bundle_is_imported(template: tuple[Env, Snapshot], env: Env) -> None:
    """The corpus itself is good: without the defect, everything is promoted."""
    bundle = env.bundle(ARTIFACTS, sequence=2)
    env.import_ok(pack_tar(env.path("good.tar"), bundle))
    after = env.snapshot()
    assert len(after.objects) == len(template[1].objects) + len(ARTIFACTS)
    assert staging_files(env.home) == []


# --- in process: the bad artifact is found after the others were hashed and staged ---


@pytest.mark.parametrize("tar", [False, True], ids=["dir", "tar"])
def test_others_hashed_and_staged_first_then_nothing_promoted(
    template: tuple[Env, Snapshot], env: Env, tar: bool
) -> None:
    """Hold the last artifact's check until every other one is fully hashed and staged."""
    bundle = broken_bundle(env, flip_bit, tar)
    home = Home(env.home)
    others = {ref.partition("@")[0] for ref in ARTIFACTS} - {LAST}
    done: set[str] = set()
    lock = threading.Lock()
    others_done = threading.Event()
    staged_when_checked: list[list[str]] = []

    def progress(name: str, n: int, size: int) -> None:
        if n == size:
            with lock:
                done.add(name)
                if others <= done:
                    others_done.set()
        if name == LAST and n == size:
            assert others_done.wait(60), f"others never finished: {done}"
            staged_when_checked.append(staging_files(env.home))

    with pytest.raises(DigestMismatchError):
        import_bundle(home, bundle, progress=progress)
    assert others <= done
    # When the bad artifact was checked, the others sat fsynced in staging...
    assert len(staged_when_checked) == 1
    assert len(staged_when_checked[0]) >= len(others) + 1
    # ...and none of them was promoted.
    assert staging_files(env.home) == []
    after = env.snapshot()
    assert after.store_part() == template[1].store_part()


@pytest.mark.parametrize("dry_run", [False, True], ids=["import", "dry-run"])
def test_file_growing_while_read_is_endless_data(
    template: tuple[Env, Snapshot], env: Env, monkeypatch: pytest.MonkeyPatch, dry_run: bool
) -> None:
    """A file that grows after its size was checked, while it is read, is refused."""
    bundle = env.bundle({"alpha@1": BIG + BIG + BIG, "delta@1": SMALL_D}, sequence=2)
    target = os.path.realpath(_file(bundle, "alpha"))
    grown = threading.Event()

    def grow_after_first_read(fd: int) -> None:
        if not grown.is_set() and os.readlink(f"/proc/self/fd/{fd}") == target:
            grown.set()
            with open(target, "ab") as f:
                f.write(b"endless data")

    real_preadv, real_cfr = os.preadv, os.copy_file_range

    def preadv(fd: int, buffers: Any, offset: int, *flags: int) -> int:
        n: int = real_preadv(fd, buffers, offset, *flags)
        grow_after_first_read(fd)
        return n

    def copy_file_range(src: int, dst: int, count: int, *args: Any, **kw: Any) -> int:
        n: int = real_cfr(src, dst, count, *args, **kw)
        grow_after_first_read(src)
        return n

    monkeypatch.setattr(os, "preadv", preadv)
    monkeypatch.setattr(os, "copy_file_range", copy_file_range)
    with pytest.raises(ArtifactTooLongError):
        import_bundle(Home(env.home), bundle, dry_run=dry_run)
    assert grown.is_set()
    assert staging_files(env.home) == []
    after = env.snapshot()
    assert after.store_part() == template[1].store_part()


def test_dry_run_of_a_broken_bundle_changes_nothing(
    template: tuple[Env, Snapshot], env: Env
) -> None:
    bundle = broken_bundle(env, flip_bit, tar=False)
    with pytest.raises(RejectedError) as info:
        import_bundle(Home(env.home), bundle, dry_run=True)
    assert info.value.code == "digest_mismatch"
    after = env.snapshot()
    assert after.store_part() == template[1].store_part()
    assert after.events_after(template[1]) == []  # a dry run records nothing
