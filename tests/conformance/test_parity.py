"""One decision, two readers: the TUI's review says what ``import --dry-run`` does.

For every conformance case that imports a bundle, the review (``tui.model.
review_bundle``, a formatting of ``appliance.evaluation.preview_bundle``) and the
real CLI's ``import --dry-run`` reach the same verdict: both allow, or both refuse
with the same code. The only difference allowed is the one the review announces:
it hashes nothing, so a refusal that only reading the artifact bytes can find
(``ARTIFACT_BYTES``) is "allowed so far" in the review.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from appliance.home import Home
from tui.model import review_bundle

from .driver import Site, cli, copy_home, ok, snapshot
from .test_attacks import CASES, Case, Ctx

# Found only by opening and reading the artifacts (the review reads the manifest and the listing).
ARTIFACT_BYTES = {"digest_mismatch", "artifact_too_long", "artifact_truncated", "media_changed"}


def _verdict_of_review(home: Path, path: Path, witness: Path | None = None) -> str | None:
    review = review_bundle(Home(home), path, witness)
    if review.allowed:
        return None
    assert review.problem is not None, review
    return review.problem.code


def _verdict_of_dry_run(home: Path, path: Path, witness: Path | None = None) -> str | None:
    r = cli(home, "import", "--dry-run", path, witness=witness)
    assert r.rc in (0, 1, 2, 3, 4), str(r)
    return None if r.rc == 0 else r.code


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_review_verdict_equals_dry_run(case: Case, site: Site, home: Path, tmp_path: Path) -> None:
    ctx = Ctx(site, home, tmp_path)
    args = case.make(ctx)
    if args[0] != "import":
        pytest.skip("not an import: trust apply has no review")
    path = Path(args[-1])
    before = snapshot(home)
    review = _verdict_of_review(home, path)
    dry = _verdict_of_dry_run(home, path)
    assert snapshot(home).listing == before.listing
    if dry in ARTIFACT_BYTES:
        assert review is None, f"review {review}, dry run {dry}"
    else:
        assert review == dry, f"review {review}, dry run {dry}"
    assert dry == case.code  # and both agree with the real import's refusal


def test_review_allows_what_dry_run_allows(site: Site, home: Path, tmp_path: Path) -> None:
    built = Ctx(site, home, tmp_path).next_bundle()
    assert _verdict_of_review(home, built.path) is None
    assert _verdict_of_dry_run(home, built.path) is None


def test_review_of_a_home_behind_its_witness(wsite: Site, tmp_path: Path) -> None:
    """The issue's case: restored behind its witness, review said allowed, import said 4."""
    assert wsite.witness is not None
    w = tmp_path / "witness.json"
    home = copy_home(wsite.home, tmp_path / "home", witness_src=wsite.witness, witness_dst=w)
    backup = tmp_path / "backup"
    subprocess.run(["cp", "-a", str(home), str(backup)], check=True)
    repo = wsite.repo
    ok(cli(home, "import", repo.bundle({"m@3.0": b"three" * 100}, sequence=3).path, witness=w))
    subprocess.run(["rm", "-rf", str(home)], check=True)
    subprocess.run(["mv", str(backup), str(home)], check=True)
    # a bundle that does not bring the home up to the witness (sequence 3 again is new here)
    stale = repo.bundle(
        {"o@2.0": b"other two" * 100}, stream="other", sequence=2, signers=("other",)
    )
    assert _verdict_of_review(home, stale.path, w) == "state_rolled_back"
    assert _verdict_of_dry_run(home, stale.path, w) == "state_rolled_back"
    review = review_bundle(Home(home), stale.path, w)
    witness_row = [c for c in review.checks if c.label == "Witness"]
    assert witness_row and witness_row[0].ok is False
    # the bundle that does bring it up to date is allowed by both
    current = repo.bundle({"m@3.0": b"three" * 100}, sequence=3)
    assert _verdict_of_review(home, current.path, w) is None
    assert _verdict_of_dry_run(home, current.path, w) is None
