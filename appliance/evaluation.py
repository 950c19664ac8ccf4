"""The decision about a bundle on media, shared by the import and every preview of it.

``evaluate_source`` authenticates the manifest, checks the file list and runs
``appliance.policy.evaluate_bundle`` (every check, in order, the witness's
last); the import raises the first failing check, ``preview_bundle`` (the
TUI's review) returns them all. Both go through the same steps in the same
order, so what a preview says is what the import will do, short of the
artifact bytes (a preview hashes nothing): witness present; the media opens as
a bundle; the carried trust updates verify (a preview applies them in memory
only); the manifest authenticates against the keys in force after them; the
files on media are the ones it lists; then the policy.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import sqlite_utils

from appliance import witness
from appliance.errors import ApplianceError, TrustUpdateReplayError
from appliance.evidence import name_owners
from appliance.home import Home
from appliance.policy import Evaluation, StoreView, WitnessGate, evaluate_bundle
from appliance.trust import TrustState, apply_update, describe, role_key
from appliance.truststore import load_trust, site, stream_sequences, time_floors, trusted_now
from bundles.documents import TrustUpdate
from bundles.dsse import Envelope
from bundles.manifest import Manifest
from bundles.media import MediaSource
from bundles.reader import Bundle, open_bundle_media, peek, read_trust_updates
from bundles.timeutil import utcnow

__all__ = [
    "BundlePreview",
    "SignatureStatus",
    "carried_updates",
    "claimed_statuses",
    "evaluate_source",
    "preview_bundle",
    "store_view",
    "witness_gate",
]


def store_view(db: sqlite_utils.Database) -> StoreView:
    owners = name_owners(db)  # from the signed manifests, not the names table
    digests = {(n, v): d for n, v, d in db.execute("SELECT name, version, digest FROM artifacts")}
    return StoreView(site(db), stream_sequences(db), owners, digests)


def witness_gate(
    db: sqlite_utils.Database, check: witness.WitnessCheck, manifest: Manifest
) -> WitnessGate:
    """What the witness says of importing ``manifest`` (a home behind it takes only a
    bundle that brings its signed counters up to the witness's)."""
    status = check.status.value
    if check.status is witness.WitnessStatus.MISSING:
        return WitnessGate(status, check.detail, witness.missing_error(check))
    try:
        witness.require_resync(db, check, "bundle", stream=(manifest.stream, manifest.sequence))
    except ApplianceError as e:
        return WitnessGate(status, check.detail, e)
    if check.status is witness.WitnessStatus.BEHIND:
        return WitnessGate(status, f"{check.detail}; this bundle brings the home up to date")
    return WitnessGate(status, check.detail)


def carried_updates(
    state: TrustState, source: MediaSource
) -> Iterator[tuple[TrustState, TrustUpdate, Envelope]]:
    """Each trust update the bundle carries that is not yet applied, verified against the
    state the previous ones left (raises the refusal of a bad one; replays are skipped)."""
    for env in read_trust_updates(source):
        try:
            state, update = apply_update(state, env)
        except TrustUpdateReplayError:
            continue
        yield state, update, env


def evaluate_source(
    db: sqlite_utils.Database,
    source: MediaSource,
    state: TrustState,
    check: witness.WitnessCheck,
) -> tuple[Bundle, Evaluation]:
    """Authenticate and list-check the bundle on ``source``, then evaluate every policy check.

    Raises the authentication and file-list refusals (nothing to evaluate without them).
    """
    bundle = Bundle(source, state.resolver())
    bundle.check_files()
    evaluation = evaluate_bundle(
        state,
        store_view(db),
        bundle.manifest,
        bundle.signers,
        trusted_now(db, stream=bundle.manifest.stream),
        witness_gate(db, check, bundle.manifest),
    )
    return bundle, evaluation


def claimed_statuses(home: Home, manifests: dict[str, Manifest]) -> dict[str, str]:
    """For manifests as media claim them (UNVERIFIED): ``new``, ``imported``, ``older``,
    ``expired``, ``other site`` or ``refused``, by the import's own policy checks."""
    if not manifests:
        return {}
    db = home.db()
    try:
        state, view, floors = load_trust(db), store_view(db), time_floors(db)
    finally:
        db.conn.close()
    clock = utcnow()

    def now(stream: str) -> datetime:  # the stream's own trusted-time floor
        floor = floors.for_stream(stream)
        return max(clock, floor) if floor else clock

    return {
        path: evaluate_bundle(state, view, m, frozenset(), now(m.stream)).claimed_status
        for path, m in manifests.items()
    }


# --- the preview --------------------------------------------------------------------


@dataclass(frozen=True)
class SignatureStatus:
    keyid: str
    role: str
    status: str
    counts: bool
    label: str | None = None  # the key's root-signed label (``TrustState.label``)


@dataclass(frozen=True)
class BundlePreview:
    """Everything the import would decide about a bundle, before any artifact is hashed."""

    path: Path
    manifest: Manifest | None  # verified when ``verified``, else UNVERIFIED (or unreadable)
    verified: bool
    trust_note: str
    signatures: tuple[SignatureStatus, ...] = ()
    evaluation: Evaluation | None = None
    problem: ApplianceError | None = None  # what the import would raise first
    now: datetime | None = None

    @property
    def allowed(self) -> bool:
        return self.verified and self.problem is None


def _signature_rows(
    state: TrustState, envelope: Envelope, manifest: Manifest, verified: frozenset[str] | None
) -> tuple[SignatureStatus, ...]:
    """Each signature, from what the authentication found (``verified``: None if it failed)."""
    publisher = role_key("publisher", manifest.stream)
    members = state.members(publisher)
    rows: list[SignatureStatus] = []
    seen: set[str] = set()
    for sig in envelope.signatures:
        kid = sig.keyid
        entry = state.keys.get(kid)
        role = describe(entry.role) if entry else ("revoked" if kid in state.revoked else "-")
        if kid in seen:
            rows.append(SignatureStatus(kid, role, "duplicate: counted once", False))
            continue
        seen.add(kid)
        if entry is None:
            status = "revoked" if kid in state.revoked else "unknown key: ignored"
            rows.append(SignatureStatus(kid, role, status, False))
        elif verified is None:
            rows.append(SignatureStatus(kid, role, "not verified (see the refusal)", False))
        elif kid not in verified:
            rows.append(SignatureStatus(kid, role, "BAD SIGNATURE", False))
        elif kid in state.revoked:
            rows.append(
                SignatureStatus(kid, role, f"revoked in trust v{entry.revoked_version}", False)
            )
        elif kid in members:
            rows.append(SignatureStatus(kid, role, "valid, counts", True))
        else:
            rows.append(SignatureStatus(kid, role, f"valid, but not {describe(publisher)}", False))
    return tuple(replace(r, label=state.label(r.keyid)) for r in rows)


def preview_bundle(home: Home, path: Path, witness_path: Path | None = None) -> BundlePreview:
    """What ``import_bundle`` would decide about ``path``; reads only, records nothing."""
    try:
        db = home.db()
    except ApplianceError as e:
        return BundlePreview(path, None, False, "not read", problem=e)
    try:
        return _preview(db, path, witness_path)
    finally:
        db.conn.close()


def _preview(db: sqlite_utils.Database, path: Path, witness_path: Path | None) -> BundlePreview:
    state = load_trust(db)
    now = trusted_now(db)
    check = witness.check(db, witness.configured_path(db, witness_path))
    first: ApplianceError | None = None
    if check.status is witness.WitnessStatus.MISSING:
        first = witness.missing_error(check)
    try:
        source = open_bundle_media(os.fspath(path))
    except ApplianceError as e:
        return BundlePreview(path, None, False, "not read", problem=first or e, now=now)
    with source:
        applied: list[int] = []
        try:
            for after, _update, _env in carried_updates(state, source):
                applied.append(after.version)
                state = after
            note = (
                ("applies " + ", ".join(f"v{v}" for v in applied) + " first")
                if applied
                else ("none to apply")
            )
        except ApplianceError as e:
            first = first or e
            note = f"REFUSED: {e.message}"
        try:
            envelope, claimed = peek(source)
        except ApplianceError as e:
            return BundlePreview(path, None, False, note, problem=first or e, now=now)
        try:
            bundle, evaluation = evaluate_source(db, source, state, check)
        except ApplianceError as e:
            rows = _signature_rows(state, envelope, claimed, None)
            return BundlePreview(path, claimed, False, note, rows, problem=first or e, now=now)
    rows = _signature_rows(state, envelope, bundle.manifest, bundle.signers)
    return BundlePreview(
        path,
        bundle.manifest,
        True,
        note,
        rows,
        evaluation,
        first or evaluation.first_error,
        now,
    )
