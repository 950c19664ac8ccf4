"""A restored older copy of the home, behind its witness: loads refuse (exit 4) until re-synced."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest_load import Site, make_site


@pytest.fixture
def restored(tmp_path: Path) -> tuple[Site, Path]:
    """Home copied aside (cp -a), then two more signed changes, then the old copy restored."""
    site = make_site(tmp_path, witness=True)
    site.ship({"model@1.0": b"one"})
    old = tmp_path / "home-backup"
    subprocess.run(["cp", "-a", str(site.home), str(old)], check=True)
    site.ship({"model@2.0": b"two"})
    revocation = site.revoke(site.rollback)
    site.cli("trust", "apply", revocation, check=0)
    assert site.cli("load", "model", check=0).stdout == b"two"
    shutil.rmtree(site.home)
    subprocess.run(["cp", "-a", str(old), str(site.home)], check=True)
    return site, revocation


def test_restored_home_refuses_loads(restored: tuple[Site, Path]) -> None:
    site, _ = restored
    res = site.cli("load", "model", "--json", "-o", site.tmp / "out")
    assert res.code == 4 and res.json["error"]["code"] == "state_rolled_back"
    assert not (site.tmp / "out").exists()
    marker = site.tmp / "ran"
    assert site.cli("exec", "model", "--", "touch", marker).code == 4
    assert not marker.exists()
    res = site.cli("trust", "show", "--json", check=0)
    assert res.json["witness"]["status"] == "home_behind"


def test_current_bundle_resyncs(restored: tuple[Site, Path]) -> None:
    site, revocation = restored
    stale = site.bundle({"model@3.0": b"three"})  # no trust update: counters stay behind
    assert site.cli("import", stale, "--json").json["error"]["code"] == "state_rolled_back"
    current = site.bundle({"model@4.0": b"four"}, trust_updates=(revocation.read_bytes(),))
    site.cli("import", current, check=0)
    assert site.cli("load", "model", check=0).stdout == b"four"


def test_witness_reset_resyncs_and_is_audited(restored: tuple[Site, Path]) -> None:
    site, _ = restored
    assert site.cli("load", "model").code == 4
    site.cli("witness", "reset", "--reason", "restored from the 03:00 backup", check=0)
    assert site.cli("load", "model", check=0).stdout == b"one"
    events = site.cli("audit", "show", "--json", check=0).json["events"]
    resets = [e for e in events if e["type"] == "witness_reset"]
    assert resets and resets[-1]["detail"]["reason"] == "restored from the 03:00 backup"


def test_missing_witness_refuses(tmp_path: Path) -> None:
    site = make_site(tmp_path, witness=True)
    site.ship({"model@1.0": b"one"})
    assert site.witness is not None
    site.witness.unlink()
    res = site.cli("load", "model", "--json", "-o", tmp_path / "out")
    assert res.code == 4 and res.json["error"]["code"] == "witness_missing"
    res = site.cli("exec", "model", "--json", "--", "true")
    assert res.code == 4 and res.json["error"]["code"] == "witness_missing"


def test_rollback_checks_and_refreshes_the_witness(tmp_path: Path) -> None:
    from appliance.rollback import authorize_rollback

    site = make_site(tmp_path, witness=True)
    site.ship({"model@1.0": b"one"})
    site.ship({"model@2.0": b"two"})
    auth = tmp_path / "auth.json"
    authorize_rollback(auth, "model", "1.0", [site.rollback], reason="back")
    assert site.witness is not None
    saved = site.witness.read_bytes()
    site.witness.unlink()
    res = site.cli("rollback", "model", "--authorization", auth, "--json")
    assert res.code == 4 and res.json["error"]["code"] == "witness_missing"
    site.witness.write_bytes(saved)
    site.cli("rollback", "model", "--authorization", auth, check=0)
    assert site.witness.read_bytes() != saved  # brought forward after the move
    res = site.cli("trust", "show", "--json", check=0)
    assert res.json["witness"]["status"] == "current"
