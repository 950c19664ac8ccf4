"""An import of many tiny artifacts shares its staging and promotion with a forked helper
(``bundles.helper_batches``); whatever the helper meets, the import decides as it
would alone: the same refusals, the same codes, nothing changed.

The helper is a real forked process (a subprocess CLI forks its own). To steer what it
meets, the tests wrap the importer's own functions before the fork (a forked child runs
the wrapper too) and tell the two processes apart by pid.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from conformance.driver import error_code, object_files
from import_env import Env

import appliance.importer as importer
import appliance.store as store
import bundles.helper_batches as helper_batches
from appliance.errors import HomeTamperedError
from appliance.home import Home
from bundles.errors import DigestMismatchError

N = 600  # several batches for each process (helper_batches: 64 a batch, 256 at least)

pytestmark = pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="no helper on one core")


def _artifacts(tag: str, n: int = N) -> dict[str, bytes]:
    return {f"{tag}{i:04d}@1": f"{tag} {i} ".encode() * (8 + i % 50) for i in range(n)}


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path / "site")


def _slow_here(monkeypatch: pytest.MonkeyPatch, then: Any = None) -> int:
    """Wrap the importer's ``stage_artifact``: this process takes 1 ms more per artifact
    (so the helper surely gets batches); in the helper, ``then(bundle, artifact)`` runs
    first. Returns this process's pid."""
    parent = os.getpid()
    real = importer.stage_artifact

    def stage(bundle: Any, artifact: Any, *args: Any, **kwargs: Any) -> Any:
        if os.getpid() == parent:
            time.sleep(0.001)
        elif then is not None:
            then(bundle, artifact)
        return real(bundle, artifact, *args, **kwargs)

    monkeypatch.setattr(importer, "stage_artifact", stage)
    return parent


@pytest.mark.parametrize("tar", [False, True], ids=["folder", "tar"])
def test_the_helper_stages_and_promotes_part_of_the_import(
    env: Env, helper_counters: dict[str, int], monkeypatch: pytest.MonkeyPatch, tar: bool
) -> None:
    arts = _artifacts("a")
    bundle = env.bundle(arts, tar=tar)  # a tar's members share one descriptor (pread)
    _reset(helper_counters)
    _slow_here(monkeypatch)
    importer.import_bundle(Home(env.home), bundle)
    assert helper_counters["helpers"] == 2  # one for staging, one for promotion
    assert 0 < helper_counters["by_helper"] < 2 * N
    doc = env.expect_ok("verify")
    assert doc["checked"] == N
    stored = {v[2] for v in object_files(env.home).values()}
    import blake3

    assert stored == {blake3.blake3(b).hexdigest() for b in arts.values()}
    assert not any((env.home / "staging").iterdir())


def test_present_and_new_artifacts_and_a_dry_run(
    env: Env, helper_counters: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _artifacts("a")
    env.import_ok(env.bundle(first))
    mixed = {**dict(list(first.items())[: N // 2]), **_artifacts("b", N // 2)}
    bundle = env.bundle(mixed, sequence=2)
    _reset(helper_counters)
    before = env.snapshot()
    _slow_here(monkeypatch)
    result = importer.import_bundle(Home(env.home), bundle, dry_run=True)
    assert helper_counters["by_helper"] > 0  # the helper hashed (and wrote nothing)
    assert env.snapshot().store_part() == before.store_part()
    assert {a["status"] for a in result.artifacts} == {"new", "present"}
    helper_counters["by_helper"] = 0
    importer.import_bundle(Home(env.home), bundle)
    assert helper_counters["by_helper"] > 0
    assert env.expect_ok("verify")["checked"] == N + N // 2


def _reset(helper_counters: dict[str, int]) -> None:
    """Count from here: writing a folder's bundle of this size has a helper too."""
    helper_counters.update(dict.fromkeys(helper_counters, 0))


def _tamper(bundle_dir: Path) -> Any:
    def then(bundle: Any, artifact: Any) -> None:
        path = bundle_dir / artifact.files[0].path
        data = bytearray(path.read_bytes())
        data[0] ^= 1  # same size, other bytes: only the digest can tell
        path.write_bytes(bytes(data))

    return then


def test_media_changed_under_the_helper_is_the_importers_refusal(
    env: Env, helper_counters: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = env.bundle(_artifacts("a"))
    _reset(helper_counters)
    before = env.snapshot()
    _slow_here(monkeypatch, _tamper(bundle))
    with pytest.raises(DigestMismatchError) as exc:
        importer.import_bundle(Home(env.home), bundle)
    assert exc.value.code == "digest_mismatch"
    # nothing the helper did was used
    assert helper_counters["helpers"] == 1 and helper_counters["by_helper"] == 0
    after = env.snapshot()
    assert after.store_part() == before.store_part()
    assert [(e["type"], e["outcome"], e["code"]) for e in after.events_after(before)] == [
        ("import", "rejected", "digest_mismatch")
    ]
    assert not any((env.home / "staging").iterdir())


def test_a_helper_that_dies_leaves_its_work_here(
    env: Env, helper_counters: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    arts = _artifacts("a")
    bundle = env.bundle(arts)
    _reset(helper_counters)

    def die(bundle: Any, artifact: Any) -> None:
        os._exit(9)

    _slow_here(monkeypatch, die)
    importer.import_bundle(Home(env.home), bundle)
    assert helper_counters["by_helper"] < N  # staging: all here; promotion may still share
    assert env.expect_ok("verify")["checked"] == N


@pytest.mark.parametrize("where", ["helper", "here"])
def test_a_staging_file_replaced_before_promotion_is_home_tampered(
    env: Env, helper_counters: dict[str, int], monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """A writer of the home removes a verified staging file and plants another at its
    name. ext4 gives the new file the freed inode number at once, so the device and inode
    number match; its generation number (and change time) do not."""
    bundle = env.bundle(_artifacts("a"))
    _reset(helper_counters)
    before = env.snapshot()
    parent = os.getpid()
    real = store.Promotion.promote
    reused: list[bool] = []

    def promote(self: Any, staged: Any, digest: str, **kw: Any) -> None:
        if (os.getpid() == parent) == (where == "here"):
            path = env.home / "staging" / staged.name
            path.unlink()
            path.write_bytes(b"planted")
            reused.append(path.stat().st_ino == staged.ino)
        elif os.getpid() == parent:
            time.sleep(0.001)  # the helper surely takes batches
        real(self, staged, digest, **kw)

    monkeypatch.setattr(store.Promotion, "promote", promote)
    if where == "here":
        monkeypatch.setattr(helper_batches, "fork_is_safe", lambda: False)
    with pytest.raises(HomeTamperedError) as exc:
        importer.import_bundle(Home(env.home), bundle)
    assert exc.value.code == "home_tampered"
    assert "file swapped since it was verified" in str(exc.value)
    if where == "here":
        assert reused == [True]  # the planted file did get the verified file's number
    after = env.snapshot()
    assert after.listing == before.listing and after.verify_rc == before.verify_rc
    assert b"planted" not in {
        (env.home / "objects" / p).read_bytes() for p in object_files(env.home)
    }


def test_the_cli_refuses_a_bundle_tampered_throughout(env: Env) -> None:
    """Through the real CLI (a subprocess; its helper forks there): one artifact in every
    batch changed on media, so both processes meet one."""
    bundle = env.bundle(_artifacts("a"))
    for i, path in enumerate(sorted((bundle / "artifacts").iterdir())):
        if i % 40 == 7:
            data = bytearray(path.read_bytes())
            data[-1] ^= 0x20
            path.write_bytes(bytes(data))
    before = env.snapshot()
    rc, doc = env.run("import", bundle)
    assert (rc, error_code(doc)) == (1, "digest_mismatch"), doc
    assert env.snapshot().store_part() == before.store_part()
    assert not any((env.home / "staging").iterdir())
