"""An import given the identity of the bundle an operator reviewed imports that bundle
and no other, and every document on media is read once per import.

The review (``preview_bundle``) names what it showed by ``bundle_identity``: a BLAKE3 of
the signed manifest envelope and the trust updates carried. Media swapped after the
review for another bundle, validly signed and importable on its own, or one that carries
an extra trust update, is ``media_changed`` (exit 3: the stick changed, not an attack
proven) before anything is written; a device that answers a second read of the manifest
with other bytes cannot make the decision differ from what was compared.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from import_env import Env

from appliance.evaluation import bundle_identity, preview_bundle
from appliance.home import Home
from appliance.importer import import_bundle
from bundles.documents import AddKey
from bundles.errors import MediaChangedError
from bundles.reader import MANIFEST_FILE, open_bundle_media


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path / "env")


def _swap(target: Path, other: Path) -> None:
    shutil.rmtree(target)
    shutil.copytree(other, target)


def test_the_reviewed_bundle_imports(env: Env) -> None:
    bundle = env.bundle({"model@1": b"one " * 100})
    preview = preview_bundle(Home(env.home), bundle)
    assert preview.allowed and preview.identity is not None
    result = import_bundle(Home(env.home), bundle, expect_identity=preview.identity)
    assert [a["name"] for a in result.artifacts] == ["model"]


@pytest.mark.parametrize("swap", ["another_bundle", "an_extra_trust_update"])
def test_media_swapped_after_the_review_is_media_changed(env: Env, swap: str) -> None:
    bundle = env.bundle({"model@1": b"one " * 100}, sequence=1)
    identity = preview_bundle(Home(env.home), bundle).identity
    assert identity is not None
    if swap == "another_bundle":
        other = env.bundle({"model@2": b"two " * 100}, sequence=2)
    else:
        update = env.trust_update([AddKey(env.new_key("extra").public, "publisher", "models")])
        other = env.bundle({"model@1": b"one " * 100}, sequence=1, trust_updates=[update])
    assert preview_bundle(Home(env.home), other).allowed  # importable on its own
    _swap(bundle, other)
    before = env.snapshot()
    with pytest.raises(MediaChangedError) as info:
        import_bundle(Home(env.home), bundle, expect_identity=identity)
    assert info.value.code == "media_changed" and "reviewed" in info.value.message
    assert env.snapshot() == before  # no trust update applied, no record, no event


def test_each_document_on_media_is_read_once_per_source(env: Env) -> None:
    """A second read of the manifest gets the first read's bytes, so the identity and
    the decision are made on one read, whatever the device answers later."""
    bundle = env.bundle({"model@1": b"one " * 100})
    with open_bundle_media(bundle) as source:
        first = bundle_identity(source)
        other = env.bundle({"model@2": b"two " * 100}, sequence=2)
        (bundle / MANIFEST_FILE).write_bytes((other / MANIFEST_FILE).read_bytes())
        assert bundle_identity(source) == first
    with open_bundle_media(bundle) as fresh:
        assert bundle_identity(fresh) != first


def test_the_cli_pins_what_its_dry_run_printed(env: Env) -> None:
    """A script's 'import --dry-run --json', then 'import --expect-identity': the bundle
    checked is the one imported; swapped in between, exit 3 media_changed, nothing
    stored; a malformed identity, or one with several paths, is a usage error (exit 2)."""
    bundle = env.bundle({"model@1": b"one " * 100}, sequence=1)
    identity = env.expect_ok("import", "--dry-run", bundle)["bundle_identity"]
    assert len(identity) == 64
    _swap(bundle, env.bundle({"model@2": b"two " * 100}, sequence=2))
    before = env.snapshot()
    doc = env.expect_refusal(
        "media_changed", "import", bundle, "--expect-identity", identity, exit_code=3
    )
    assert "reviewed" in doc["error"]["message"]
    assert env.snapshot() == before
    env.expect_refusal("usage", "import", bundle, "--expect-identity", "ABC", exit_code=2)
    env.expect_refusal(
        "usage", "import", bundle, bundle, "--expect-identity", identity, exit_code=2
    )
    fresh = env.expect_ok("import", "--dry-run", bundle)["bundle_identity"]
    done = env.expect_ok("import", bundle, "--expect-identity", fresh)
    assert done["bundle_identity"] == fresh and done["sequence"] == 2


def test_a_reviewed_bundle_that_no_longer_reads_is_media_changed(env: Env) -> None:
    bundle = env.bundle({"model@1": b"one " * 100})
    identity = env.expect_ok("import", "--dry-run", bundle)["bundle_identity"]
    (bundle / MANIFEST_FILE).write_bytes(b"{not json")
    before = env.snapshot()
    env.expect_refusal(
        "media_changed", "import", bundle, "--expect-identity", identity, exit_code=3
    )
    assert env.snapshot() == before
