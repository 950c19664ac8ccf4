"""What the screens show, gathered from the appliance's public API (no textual here).

Every function opens its own database connection and closes it, so each runs
in a worker, never on the UI thread. The media polls (``tui.scanner``) run in a
child process: parsing a stick's manifests must not hold the TUI's GIL.
``review_bundle`` formats the core's preview (``appliance.evaluation.preview_bundle``:
the same steps and checks as the import, hashing nothing); no decision is made here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from appliance import audit, witness
from appliance.db import Database, sqlite_errors
from appliance.evaluation import ClaimedStatusCache, claimed_statuses, preview_bundle
from appliance.home import Home
from appliance.mediascan import Medium, ScanCache, scan
from appliance.rollback import (
    MAX_AUTHORIZATION_BYTES,
    evaluate_authorization,
    read_authorization,
    verify_authorization,
)
from appliance.store import Record, active_version, records
from appliance.trust import LoaderGrant, describe
from appliance.truststore import load_trust, site, stream_sequences, trusted_now
from bundles.documents import ROLLBACK_PAYLOAD_TYPE, RollbackAuthorization
from bundles.dsse import Envelope
from bundles.errors import ApplianceError
from bundles.manifest import Manifest

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
def opened(home: Home) -> Iterator[Database]:
    """The state database for one look. A database that stops reading part-way (a page
    overwritten outside SQLite) is the core's ``store_corrupt``, which every screen shows
    as it shows any refusal, never an exception that ends the app."""
    with sqlite_errors():
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
    label: str | None = None  # root-signed (issue 14): shown with ``key_text``


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
    identity: str | None = None  # the core's bundle identity: the import takes only this

    @property
    def allowed(self) -> bool:
        return self.verified and self.problem is None

    @property
    def total_size(self) -> int:
        return sum(a.size for a in self.artifacts)


def review_bundle(home: Home, path: Path, witness_path: Path | None = None) -> Review:
    """The core's preview (``appliance.evaluation.preview_bundle``), as rows; never raises."""
    p = preview_bundle(home, path, witness_path)
    ev = p.evaluation
    checks = [Check(c.label, c.ok, c.detail) for c in ev.checks] if ev is not None else []
    checks.insert(min(1, len(checks)), Check("Trust upd.", None, p.trust_note))
    m = p.manifest
    status = ev.artifact_status if ev is not None else {}
    artifacts = (
        tuple(
            ArtifactRow(
                a.name,
                a.version,
                a.release,
                a.size,
                a.media_type,
                a.blake3,
                status.get(a.ref, "unverified"),
            )
            for a in m.artifacts
        )
        if m is not None
        else ()
    )
    return Review(
        path,
        p.verified,
        m,
        tuple(checks),
        tuple(SignatureRow(s.keyid, s.role, s.status, s.counts, s.label) for s in p.signatures),
        sum(s.counts for s in p.signatures),
        ev.threshold if ev is not None else 1,
        artifacts,
        None if p.problem is None else Problem.of(p.problem),
        p.identity,
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
    label: str | None = None  # root-signed (issue 14): shown with ``key_text``


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
    # issue 11: the root-signed loader grants, the same core data ``trust show --json`` lists
    grants: tuple[LoaderGrant, ...] = ()

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
            KeyRow(kid, describe(e.role), e.added_version, e.revoked_version, state.label(kid))
            for kid, e in sorted(state.keys.items(), key=lambda kv: (kv[1].role, kv[0]))
        ]
        keys += [
            KeyRow(kid, "revoked", None, state.version, state.label(kid))
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
            state.grants,
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


def audit_log(home: Home, last: int | None = None) -> AuditLog:
    """Events (detail parsed), newest last, with the whole chain's status. (One artifact's
    events are ``appliance.history.artifact_history``'s, as the CLI shows them.)"""
    with opened(home) as db:
        problem: Problem | None = None
        try:
            count, head = audit.verify_chain(db)
        except ApplianceError as e:
            problem = Problem.of(e)
            count, head = audit.head(db)
        events = audit.rows(db)
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


# --- media polls (in a child process) -----------------------------------------------


@dataclass(frozen=True)
class MediaPoll:
    """One poll of the media: the bundles as claimed and the core's claimed status of each.

    ``media`` carries no parsed manifests (``BundleEntry.claimed`` is None): they stay in
    the scanner process, which parsed them. ``parsed`` and ``evaluated`` count the work
    this poll did (manifests read, policy evaluations run): an unchanged stick costs 0.
    """

    media: list[Medium]
    statuses: dict[str, str]
    parsed: int = 0
    evaluated: int = 0
    problem: Problem | None = None


@dataclass
class _PollState:
    key: tuple[str, tuple[str, ...], bool]
    scans: ScanCache = field(default_factory=ScanCache)
    statuses: ClaimedStatusCache = field(default_factory=ClaimedStatusCache)


_poll_state: _PollState | None = None


def _without_claimed(medium: Medium) -> Medium:
    return replace(medium, bundles=tuple(replace(b, claimed=None) for b in medium.bundles))


def poll_media(
    home_root: str, dirs: tuple[str, ...], auto: bool, clock: datetime, forget: bool = False
) -> MediaPoll:
    """Scan the media and give each readable bundle the core's claimed status (runs in
    the scanner process; its caches live there, across polls, until ``forget``).

    ``clock``: the TUI's system time (the status's expiry is judged by it, never below
    the stream's trusted-time floor)."""
    global _poll_state
    key = (home_root, dirs, auto)
    if _poll_state is None or _poll_state.key != key or forget:
        _poll_state = _PollState(key)
    state = _poll_state
    reads, evaluations = state.scans.reads, state.statuses.evaluations
    media = scan(list(dirs), cache=state.scans, auto=auto, strict=False)
    bundles = [b for m in media for b in m.bundles if b.claimed is not None]
    problem: Problem | None = None
    try:
        with sqlite_errors():  # a database that stops reading: store_corrupt, as in ``opened``
            statuses = claimed_statuses(
                Home(Path(home_root)),
                {b.path: b.claimed for b in bundles},
                clock=clock,
                cache=state.statuses,
                identities={b.path: b.identity for b in bundles if b.identity is not None},
            )
    except ApplianceError as e:
        statuses, problem = {}, Problem.of(e)
    return MediaPoll(
        [_without_claimed(m) for m in media],
        statuses,
        state.scans.reads - reads,
        state.statuses.evaluations - evaluations,
        problem,
    )
