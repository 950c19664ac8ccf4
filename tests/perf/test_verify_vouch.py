"""``verify`` of many records: the stored manifest that backs them is verified and matched
against them by the hashing helper (``provenance.judge_manifests``) while the verifying
process reads the pointers; the verifying process then only counts the signers.

What the helper does not vouch for (a record its manifest does not list as it is, a
manifest that does not verify, an answer of another shape, a helper that failed) is
judged by the verifying process itself, with the statuses, codes and messages it gives
without a helper: each case here is compared with a pass that forks no helper.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest_load import Site, make_site
from test_stored_manifest import _fresh_memo  # noqa: F401  # the autouse fixture

from appliance import provenance, verify
from appliance.importer import import_bundle
from appliance.store import records
from appliance.truststore import load_trust
from appliance.verify import verify_records
from bundles.dsse import Envelope

N = 600  # above verify._HELPER_MIN: a helper is forked

pytestmark = pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: no helper")


@pytest.fixture(autouse=True)
def _forks(monkeypatch: pytest.MonkeyPatch) -> None:
    # The helper forks only when no other thread runs; here the only other one is
    # pytest-timeout's idle timer (the CLI, where verify runs, has none).
    monkeypatch.setattr(verify, "fork_is_safe", lambda: True)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Site:
    site = make_site(tmp_path_factory.mktemp("vouch"))
    import_bundle(site.h, site.bundle({f"a{i}@1": f"a {i}".encode() * 20 for i in range(N)}))
    return site


@pytest.fixture
def site(template: Site, tmp_path: Path) -> Site:
    """A copy of the template's home, with its own trust anchor."""
    import shutil

    from appliance.anchor import copy_anchor

    home = tmp_path / "home"
    shutil.copytree(template.home, home, symlinks=True)
    copy_anchor(template.home, home)
    return Site(**{**template.__dict__, "home": home, "tmp": tmp_path})


Found = list[tuple[str, str | None, str | None]]


def _verify(site: Site) -> Found:
    db = site.h.db()
    try:
        results = verify_records(site.h, db, load_trust(db), records(db))
    finally:
        db.conn.close()
    return [(r.status, r.code, r.message) for r in results]


def _without_helper(site: Site, monkeypatch: pytest.MonkeyPatch) -> Found:
    with monkeypatch.context() as m:
        m.setattr(verify, "_HELPER_MIN", 10**9)
        provenance._memo.clear()
        provenance._memo_keyids.clear()
        provenance._row_digests.clear()
        provenance._manifest_cache.clear()
        return _verify(site)


def _count_verifications(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Calls of ``verify_envelope`` in this process (a forked helper counts in its own copy)."""
    seen = {"n": 0}
    real = provenance.verify_envelope

    def counted(*a: Any, **k: Any) -> Any:
        seen["n"] += 1
        return real(*a, **k)

    monkeypatch.setattr(provenance, "verify_envelope", counted)
    return seen


def _sql(site: Site, statement: str) -> None:
    conn = sqlite3.connect(site.home / "appliance.db")
    with conn:
        conn.execute(statement)
    conn.close()


def test_the_helper_vouches_and_the_verifier_verifies_nothing(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = verify.counters["helper_processes"]
    seen = _count_verifications(monkeypatch)
    assert _verify(site) == [("ok", None, None)] * N
    assert verify.counters["helper_processes"] == before + 1
    assert seen["n"] == 0  # the stored manifest was verified in the helper only


def test_a_record_its_manifest_does_not_list_is_judged_here(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    _sql(site, "UPDATE artifacts SET media_type = 'text/x-evil' WHERE name = 'a7'")
    seen = _count_verifications(monkeypatch)
    found = _verify(site)
    bad = [f for f in found if f[0] != "ok"]
    assert bad == [
        ("unauthorized", "record_unauthorized", "a7@1: record differs from its signed manifest")
    ]
    assert seen["n"] == 1  # that one record: its manifest verified here too
    assert found == _without_helper(site, monkeypatch)


def test_a_manifest_that_does_not_verify_is_judged_here(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = site.h.db()
    try:
        env = Envelope.from_bytes(bytes(db.execute("SELECT envelope FROM manifests").fetchone()[0]))
        forged = Envelope(env.payload_type, env.payload + b" ", env.signatures)
        db.execute("UPDATE manifests SET envelope = ?", [forged.to_bytes()])
    finally:
        db.conn.close()
    found = _verify(site)
    assert {f[:2] for f in found} == {("unauthorized", "record_unauthorized")}
    assert all("stored manifest does not verify" in str(f[2]) for f in found)
    assert found == _without_helper(site, monkeypatch)


def test_a_signer_revoked_since_is_counted_here(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The helper says who signed; whether that still counts is today's trust, here."""
    site.cli("trust", "apply", site.revoke(site.publisher), check=0)
    found = _verify(site)
    assert {f[:2] for f in found} == {("untrusted", "revoked_key")}, found[:2]
    assert found == _without_helper(site, monkeypatch)


def test_signers_a_helper_names_count_only_by_todays_trust(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        verify, "judge_manifests", lambda trust, recs, work: _lying(work, ["0" * 64])
    )
    found = _verify(site)
    assert {f[:2] for f in found} == {("untrusted", "key_not_authorized")}, found[:2]


def _lying(work: list[provenance.Vouching], signers: list[str]) -> list[list[Any]]:
    return [[stream, seq, signers, []] for (stream, seq), _, _ in work]


@pytest.mark.parametrize(
    "answer",
    [
        None,
        "not a list",
        [["s", "1", [], []]],  # a sequence that is not an integer
        [[1, 2, 3]],
        [["bench", 1, "signers", []]],
        [["another-stream", 1, [], []]],  # a manifest the work never named
    ],
)
def test_an_answer_of_another_shape_is_judged_here(
    site: Site, monkeypatch: pytest.MonkeyPatch, answer: object
) -> None:
    monkeypatch.setattr(verify, "judge_manifests", lambda trust, recs, work: answer)
    seen = _count_verifications(monkeypatch)
    assert _verify(site) == [("ok", None, None)] * N
    assert seen["n"] == 1  # verified here instead


def test_a_helper_whose_job_fails_leaves_everything_to_the_verifier(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fails(trust: object, recs: object, work: object) -> list[list[Any]]:
        raise RuntimeError("the helper's job failed")

    monkeypatch.setattr(verify, "judge_manifests", fails)
    seen = _count_verifications(monkeypatch)
    assert _verify(site) == [("ok", None, None)] * N
    assert seen["n"] == 1


def test_through_the_cli_an_edited_record_is_exit_4(site: Site) -> None:
    _sql(site, "UPDATE artifacts SET release = 2 WHERE name = 'a9'")
    res = site.cli("--json", "verify", check=4)
    assert res.json["error"]["code"] == "record_unauthorized"
    assert res.json["error"]["message"].startswith("1 of 600 stored artifact(s)")


def test_vouched_signers_takes_only_what_the_work_named() -> None:
    work: list[provenance.Vouching] = [(("s", 1), b"", [0, 1, 2]), (("t", 2), b"", [3])]
    got = provenance.vouched_signers(work, [["s", 1, ["k"], [1]], ["u", 9, ["k"], []]])
    assert got == {0: frozenset({"k"}), 2: frozenset({"k"})}
    assert provenance.vouched_signers(work, [["s", 1, ["k"], ["1"]]]) == {}
    assert provenance.vouched_signers(work, [["s", True, ["k"], []]]) == {}
