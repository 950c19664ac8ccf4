"""What the screens show, gathered from the appliance's public API (no textual here).

Every function opens its own database connection and closes it, so each can
run on the UI thread or in a worker. ``review_bundle`` is the decision shown
before anything is imported: it authenticates the small signed manifest and
runs the pure policy check (``appliance.policy.check_bundle``) against the
trust state the import would use (after the trust updates the bundle carries),
without hashing a single artifact.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from appliance import audit, witness
from appliance.errors import TrustUpdateReplayError
from appliance.home import Home
from appliance.importer import store_view
from appliance.policy import Decision, StoreView, check_bundle
from appliance.rollback import (
    MAX_AUTHORIZATION_BYTES,
    evaluate_authorization,
    read_authorization,
    verify_authorization,
)
from appliance.store import Record, active_version, records
from appliance.trust import TrustState, apply_update, describe, role_key
from appliance.truststore import load_trust, site, stream_sequences, trusted_now
from bundles.documents import ROLLBACK_PAYLOAD_TYPE, RollbackAuthorization
from bundles.dsse import Envelope, pae
from bundles.errors import ApplianceError
from bundles.manifest import Manifest
from bundles.media import MediaSource, open_media
from bundles.reader import Bundle, peek, read_trust_updates
from tui import fmt

# What a refusal means, in words; the error's own message gives the particulars.
HEADLINES: dict[str, str] = {
    "sequence_replayed": "This bundle was already imported (a replay)",
    "sequence_older": "This bundle is older than what is installed (a rollback attack)",
    "wrong_site": "This bundle is addressed to another site",
    "expired": "This bundle has expired",
    "threshold_not_met": "Not enough valid publisher signatures",
    "key_not_authorized": "Signed by a key that does not hold the role this needs",
    "revoked_key": "Signed by a revoked key",
    "unknown_key": "Signed by no key this appliance knows",
    "bad_signature": "A signature does not verify: the manifest was altered",
    "unsigned": "The manifest carries no signature",
    "digest_mismatch": "An artifact's bytes do not match the signed digest (tampered)",
    "artifact_too_long": "An artifact holds more bytes than were signed",
    "artifact_truncated": "An artifact holds fewer bytes than were signed",
    "artifact_missing": "A signed artifact is missing from the media",
    "unlisted_file": "The media holds a file the manifest does not list",
    "version_conflict": "A version already installed would change its bytes",
    "name_owned_by_other_stream": "An artifact name belongs to another stream",
    "release_counter_not_increasing": "An artifact's release counter goes backwards",
    "trust_update_not_authorized": "A carried trust update is not signed by the root",
    "cancelled": "Cancelled by the operator",
    "lock_held": "Another import or change is running",
    "state_rolled_back": "The appliance's state is behind its witness",
    "witness_missing": "The state witness is missing",
}


@dataclass(frozen=True)
class Problem:
    code: str
    message: str

    @classmethod
    def of(cls, error: ApplianceError) -> Problem:
        return cls(error.code, error.message)

    @property
    def headline(self) -> str:
        return HEADLINES.get(self.code, self.code.replace("_", " ").capitalize())


@contextmanager
def opened(home: Home) -> Iterator[sqlite_utils.Database]:
    db = home.db()
    try:
        yield db
    finally:
        db.conn.close()


# --- bundle review ------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    label: str
    ok: bool | None  # None: not known (the manifest could not be read)
    text: str


@dataclass(frozen=True)
class SignatureRow:
    keyid: str
    role: str
    status: str
    counts: bool


@dataclass(frozen=True)
class ArtifactRow:
    name: str
    version: str
    release: int
    size: int
    media_type: str
    digest: str
    status: str  # new | present | conflict | ...


@dataclass(frozen=True)
class Review:
    path: Path
    verified: bool  # manifest signatures authenticated against today's keys
    manifest: Manifest | None
    checks: tuple[Check, ...] = ()
    signatures: tuple[SignatureRow, ...] = ()
    counted: int = 0
    threshold: int = 1
    artifacts: tuple[ArtifactRow, ...] = ()
    problem: Problem | None = None

    @property
    def allowed(self) -> bool:
        return self.verified and self.problem is None

    @property
    def total_size(self) -> int:
        return sum(a.size for a in self.artifacts)


def _carried_updates(state: TrustState, source: MediaSource) -> tuple[TrustState, str]:
    """Apply the bundle's trust updates in memory, as the import will (raises on refusal)."""
    applied: list[int] = []
    skipped = 0
    for env in read_trust_updates(source):
        try:
            state, _ = apply_update(state, env)
        except TrustUpdateReplayError:
            skipped += 1
            continue
        applied.append(state.version)
    if not applied and not skipped:
        return state, "none carried"
    parts = []
    if applied:
        parts.append("applies " + ", ".join(f"v{v}" for v in applied) + " first")
    if skipped:
        parts.append(f"{skipped} already applied")
    return state, "; ".join(parts)


def _signatures(
    state: TrustState, envelope: Envelope, manifest: Manifest
) -> tuple[list[SignatureRow], int, int]:
    publisher = role_key("publisher", manifest.stream)
    members = state.members(publisher)
    message = pae(envelope.payload_type, envelope.payload)
    rows: list[SignatureRow] = []
    seen: set[str] = set()
    for sig in envelope.signatures:
        kid = sig.keyid
        entry = state.keys.get(kid)
        role = describe(entry.role) if entry else ("revoked" if kid in state.revoked else "-")
        if kid in seen:
            rows.append(SignatureRow(kid, role, "duplicate: counted once", False))
            continue
        seen.add(kid)
        if entry is None:
            status = "revoked" if kid in state.revoked else "unknown key: ignored"
            rows.append(SignatureRow(kid, role, status, False))
        elif not entry.key.verify(sig.sig, message):
            rows.append(SignatureRow(kid, role, "BAD SIGNATURE", False))
        elif kid in state.revoked:
            rows.append(
                SignatureRow(kid, role, f"revoked in trust v{entry.revoked_version}", False)
            )
        elif kid in members:
            rows.append(SignatureRow(kid, role, "valid, counts", True))
        else:
            rows.append(SignatureRow(kid, role, f"valid, but not {describe(publisher)}", False))
    counted = sum(r.counts for r in rows)
    return rows, counted, state.threshold(publisher)


def _artifact_rows(
    manifest: Manifest, view: StoreView, decision: Decision | None
) -> list[ArtifactRow]:
    rows = []
    for a in manifest.artifacts:
        if decision is not None:
            status = "new" if a in decision.new else "present"
        else:
            stored = view.digests.get((a.name, a.version))
            owner = view.owners.get(a.name)
            if stored is not None:
                status = "present" if stored == a.blake3 else "CONFLICT"
            elif owner is not None and owner[0] != manifest.stream:
                status = f"owned by {owner[0]}"
            else:
                status = "new"
        rows.append(
            ArtifactRow(a.name, a.version, a.release, a.size, a.media_type, a.blake3, status)
        )
    return rows


def _checks(
    manifest: Manifest,
    view: StoreView,
    now: datetime,
    counted: int,
    need: int,
    trust_note: str,
    witness_check: witness.WitnessCheck,
) -> list[Check]:
    mark = view.sequences.get(manifest.stream, 0)
    seq = manifest.sequence
    if seq > mark:
        seq_text = f"{manifest.stream} #{seq}, installed #{mark}: newer"
    elif seq == mark:
        seq_text = f"{manifest.stream} #{seq}, installed #{mark}: REPLAYED"
    else:
        seq_text = f"{manifest.stream} #{seq}, installed #{mark}: OLDER"
    sites = ", ".join(manifest.sites) if manifest.sites else "any site"
    publisher = describe(role_key("publisher", manifest.stream))
    met = "met" if counted >= need else "NOT met"
    return [
        Check("Sequence", seq > mark, seq_text),
        Check(
            "Expires",
            manifest.expires > now,
            f"{fmt.when(manifest.expires)} ({fmt.relative(manifest.expires, now)})",
        ),
        Check("Site", manifest.allows_site(view.site), f"{sites}; here: {view.site or '-'}"),
        Check("Signers", counted >= need, f"{counted} of {need} {publisher}: {met}"),
        Check("Trust upd.", None, trust_note),
        Check(
            "Witness",
            witness_check.status
            not in (witness.WitnessStatus.MISSING, witness.WitnessStatus.BEHIND),
            witness_check.status.value,
        ),
    ]


def review_bundle(home: Home, path: Path, witness_path: Path | None = None) -> Review:
    """Authenticate the manifest, run the policy; hash nothing, never raise ApplianceError."""
    try:
        with opened(home) as db:
            state = load_trust(db)
            view = store_view(db)
            now = trusted_now(db)
            wcheck = witness.check(db, witness.configured_path(db, witness_path))
        source = open_media(path)
    except ApplianceError as e:
        return Review(path, False, None, problem=Problem.of(e))
    with source:
        problem: Problem | None = None
        if wcheck.status is witness.WitnessStatus.MISSING:
            problem = Problem("witness_missing", wcheck.detail)
        trust_note = "not read"
        try:
            state, trust_note = _carried_updates(state, source)
        except ApplianceError as e:
            problem = problem or Problem.of(e)
            trust_note = f"REFUSED: {e.message}"
        try:
            envelope, manifest = peek(source)
        except ApplianceError as e:
            return Review(path, False, None, problem=problem or Problem.of(e))
        rows, counted, need = _signatures(state, envelope, manifest)
        verified = False
        decision: Decision | None = None
        try:
            bundle = Bundle(source, state.resolver())
            verified = True
            bundle.check_files()
            if problem is None:
                decision = check_bundle(state, view, bundle.manifest, bundle.signers, now)
        except ApplianceError as e:
            problem = problem or Problem.of(e)
    checks = _checks(manifest, view, now, counted, need, trust_note, wcheck)
    return Review(
        path,
        verified,
        manifest,
        tuple(checks),
        tuple(rows),
        counted,
        need,
        tuple(_artifact_rows(manifest, view, decision)),
        problem,
    )


# --- trust, store, audit ------------------------------------------------------------


@dataclass(frozen=True)
class RoleRow:
    role: str
    threshold: int
    members: int

    @property
    def usable(self) -> bool:
        return self.members >= self.threshold


@dataclass(frozen=True)
class KeyRow:
    keyid: str
    role: str
    added_version: int | None
    revoked_version: int | None


@dataclass(frozen=True)
class TrustSummary:
    version: int
    site: str | None
    trusted_time: datetime
    roles: tuple[RoleRow, ...]
    keys: tuple[KeyRow, ...]
    streams: dict[str, int]
    witness_status: str
    witness_detail: str
    artifacts: int
    audit_events: int
    audit_problem: Problem | None

    @property
    def active_keys(self) -> int:
        return sum(k.revoked_version is None for k in self.keys)

    @property
    def revoked_keys(self) -> int:
        return sum(k.revoked_version is not None for k in self.keys)


def trust_summary(home: Home, witness_path: Path | None = None) -> TrustSummary:
    with opened(home) as db:
        state = load_trust(db)
        roles = sorted(
            {e.role for e in state.keys.values()} | set(state.thresholds),
            key=lambda r: (r[0] != "root", r),
        )
        role_rows = tuple(
            RoleRow(describe(r), state.threshold(r), len(state.members(r))) for r in roles
        )
        keys = [
            KeyRow(kid, describe(e.role), e.added_version, e.revoked_version)
            for kid, e in sorted(state.keys.items(), key=lambda kv: (kv[1].role, kv[0]))
        ]
        keys += [
            KeyRow(kid, "revoked", None, state.version)
            for kid in sorted(state.revoked - set(state.keys))
        ]
        try:
            wcheck = witness.check(db, witness.configured_path(db, witness_path))
            wstatus, wdetail = wcheck.status.value, wcheck.detail
        except ApplianceError as e:
            wstatus, wdetail = e.code, e.message
        problem: Problem | None = None
        try:
            count, _ = audit.verify_chain(db)
        except ApplianceError as e:
            problem = Problem.of(e)
            count = audit.head(db)[0]
        n_artifacts = int(db.execute("SELECT COUNT(*) FROM artifacts").fetchone()[0])
        return TrustSummary(
            state.version,
            site(db),
            trusted_now(db),
            role_rows,
            tuple(keys),
            stream_sequences(db),
            wstatus,
            wdetail,
            n_artifacts,
            count,
            problem,
        )


def inventory(home: Home) -> list[Record]:
    with opened(home) as db:
        return records(db)


@dataclass(frozen=True)
class AuditLog:
    events: list[dict[str, Any]] = field(default_factory=list)
    count: int = 0
    head: str = ""
    problem: Problem | None = None


def audit_log(home: Home, name: str | None = None, last: int | None = None) -> AuditLog:
    """Events (detail parsed), newest last, with the whole chain's status."""
    with opened(home) as db:
        problem: Problem | None = None
        try:
            count, head = audit.verify_chain(db)
        except ApplianceError as e:
            problem = Problem.of(e)
            count, head = audit.head(db)
        events = audit.rows(db, name)
    if last is not None:
        events = events[-last:]
    return AuditLog([audit.public_event(e) for e in events], count, head, problem)


def event_subject(event: dict[str, Any]) -> str:
    if event.get("name"):
        version = event.get("version")
        return f"{event['name']}@{version}" if version else str(event["name"])
    detail = event.get("detail") or {}
    if isinstance(detail, dict) and "stream" in detail:
        return f"{detail['stream']} #{detail.get('sequence', '?')}"
    if isinstance(detail, dict) and isinstance(detail.get("path"), str):
        return Path(detail["path"]).name
    if event.get("version"):
        return f"v{event['version']}"
    return ""


# --- rollback authorizations --------------------------------------------------------


@dataclass(frozen=True)
class RollbackPreview:
    path: Path
    name: str
    current: str | None
    auth: RollbackAuthorization | None = None
    verified: bool = False  # signatures meet the rollback role's threshold today
    signers: tuple[str, ...] = ()
    checks: tuple[Check, ...] = ()
    problem: Problem | None = None

    @property
    def valid(self) -> bool:
        return self.verified and self.problem is None


def _claimed(data: bytes) -> RollbackAuthorization | None:
    """UNVERIFIED: what an authorization that failed authentication claims, if readable."""
    try:
        env = Envelope.from_bytes(data, max_bytes=MAX_AUTHORIZATION_BYTES)
        if env.payload_type != ROLLBACK_PAYLOAD_TYPE:
            return None
        return RollbackAuthorization.from_payload(env.payload)
    except ApplianceError:
        return None


def preview_rollback(
    home: Home, name: str, path: Path, witness_path: Path | None = None
) -> RollbackPreview:
    """What an authorization file authorizes and whether ``apply_rollback`` would accept it.

    Read only: nothing is recorded. ``apply_rollback`` checks it all again under the lock.
    """
    with opened(home) as db:
        current = active_version(db, name)
        try:
            data = read_authorization(path)
        except ApplianceError as e:
            return RollbackPreview(path, name, current, problem=Problem.of(e))
        try:
            auth, signers = verify_authorization(db, data)
        except ApplianceError as e:
            return RollbackPreview(path, name, current, _claimed(data), problem=Problem.of(e))
        core = evaluate_authorization(db, name, auth)
        wcheck = witness.check(db, witness.configured_path(db, witness_path))
    checks = [(c.label.capitalize(), c.ok, c.detail, c.error) for c in core]
    witness_ok = wcheck.status not in (witness.WitnessStatus.MISSING, witness.WitnessStatus.BEHIND)
    checks.append(("Witness", witness_ok, wcheck.status.value, None))
    problem = next((Problem.of(err) for _, ok, _, err in checks if not ok and err), None)
    if problem is None and not witness_ok:
        problem = Problem("state_rolled_back", f"Witness: {wcheck.detail}")
    return RollbackPreview(
        path,
        name,
        current,
        auth,
        True,
        tuple(sorted(signers)),
        tuple(Check(label, ok, text) for label, ok, text, _ in checks),
        problem,
    )
