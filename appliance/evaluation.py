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

import json
import os
import threading
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import blake3

from appliance import witness
from appliance.db import Database, sqlite_errors
from appliance.errors import ApplianceError, TrustUpdateReplayError
from appliance.evidence import Floors, anchor_of, name_owners
from appliance.home import Home
from appliance.policy import Evaluation, StoreView, WitnessGate, evaluate_bundle
from appliance.provenance import db_token
from appliance.trust import TrustState, apply_update, describe, role_key
from appliance.truststore import load_trust, site, stream_sequences, time_floors, trusted_now
from bundles.documents import TrustUpdate
from bundles.dsse import Envelope
from bundles.errors import MediaChangedError
from bundles.manifest import Manifest
from bundles.media import MediaSource
from bundles.reader import (
    Bundle,
    open_bundle_media,
    peek,
    read_trust_updates,
    signed_documents,
)
from bundles.timeutil import utcnow

__all__ = [
    "BundlePreview",
    "ClaimedStatusCache",
    "bundle_identity",
    "require_identity",
    "SignatureStatus",
    "carried_updates",
    "claimed_statuses",
    "evaluate_source",
    "preview_bundle",
    "store_view",
    "witness_gate",
]


def store_view(db: Database) -> StoreView:
    owners = name_owners(db)  # from the signed manifests, not the names table
    digests = {(n, v): d for n, v, d in db.execute("SELECT name, version, digest FROM artifacts")}
    return StoreView(site(db), stream_sequences(db), owners, digests)


def witness_gate(db: Database, check: witness.WitnessCheck, manifest: Manifest) -> WitnessGate:
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


def bundle_identity(source: MediaSource) -> str:
    """What an operator reviewed: a BLAKE3 over the bytes of the bundle's signed manifest
    envelope and of every trust update it carries (``signed_documents``: each read once
    per source, so the import decides on the very bytes compared). It names the
    documents, it does not vouch for them: the import verifies them as always. Raises
    what reading them raises."""
    h = blake3.blake3()
    for data in signed_documents(source):
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()


def require_identity(source: MediaSource, expected: str) -> None:
    """``media_changed`` (exit 3) unless the bundle on ``source`` is the one reviewed
    (also when its documents no longer read: they did when it was reviewed)."""
    try:
        got = bundle_identity(source)
    except ApplianceError as e:
        raise MediaChangedError(
            f"{source.location}: not the bundle that was reviewed (it no longer reads: "
            f"{e.message}); nothing was imported"
        ) from e
    if got != expected:
        raise MediaChangedError(
            f"{source.location}: not the bundle that was reviewed (its signed manifest or "
            "its trust updates changed since); nothing was imported: review it again"
        )


def evaluate_source(
    db: Database,
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


_HomeState = tuple[TrustState, StoreView, Floors]


def _home_state(db: Database) -> _HomeState:
    return load_trust(db), store_view(db), time_floors(db)


def _claimed_now(floors: Floors, clock: datetime, stream: str) -> datetime:
    """The stream's trusted time: the clock, never below the stream's own floor."""
    floor = floors.for_stream(stream)
    return max(clock, floor) if floor else clock


def _claimed_status(state: _HomeState, manifest: Manifest, now: datetime) -> str:
    trust, view, _floors = state
    return evaluate_bundle(trust, view, manifest, frozenset(), now).claimed_status


def claimed_statuses(
    home: Home,
    manifests: dict[str, Manifest],
    *,
    clock: datetime | None = None,
    cache: ClaimedStatusCache | None = None,
    identities: dict[str, Hashable] | None = None,
) -> dict[str, str]:
    """For manifests as media claim them (UNVERIFIED): ``new``, ``imported``, ``older``,
    ``expired``, ``other site`` or ``refused``, by the import's own policy checks.

    ``clock``: the system time to judge expiry by (default now; never below the stream's
    trusted-time floor). With a ``cache`` and each path's ``identities`` (the scanner's
    ``BundleEntry.identity``), a status is recomputed only when that identity, the home's
    state (``ClaimedStatusCache``) or the manifest's side of its expiry changed.
    """
    if not manifests:
        return {}
    when = utcnow() if clock is None else clock
    if cache is not None and identities is not None:
        return cache.statuses(home, manifests, identities, when)
    db = home.db()
    try:
        state = _home_state(db)
    finally:
        db.conn.close()
    return {
        path: _claimed_status(state, m, _claimed_now(state[2], when, m.stream))
        for path, m in manifests.items()
    }


class ClaimedStatusCache:
    """``claimed_statuses`` across polls of the same media (the TUI's scanner keeps one).

    The status of a manifest depends on the manifest, the home's state (trust, the
    store's names, digests and sequences, the site, the time floors) and which side of
    the manifest's ``expires`` the trusted time is on. So a cached status is served
    while its manifest's identity (device, inode, size, mtime of the file read), the
    home's database token (``appliance.provenance.db_token``: the file's inode, size,
    mtime and SQLite's change counter, and the ``-wal``) together with its trust anchor,
    and its expiry side are all unchanged; else it is evaluated again by the same
    policy checks. Without a token (the database file cannot be read) nothing is cached.
    ``evaluations`` and ``state_loads`` count the real work (tests pin it by counting).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: tuple[Hashable, _HomeState] | None = None
        self._entries: dict[str, tuple[Hashable, Hashable, bool, str]] = {}
        self.evaluations = 0
        self.state_loads = 0

    def forget(self) -> None:
        with self._lock:
            self._state = None
            self._entries.clear()

    def _home(self, home: Home) -> tuple[Hashable | None, _HomeState]:
        db = home.db()  # checks the home and its anchor, every time
        try:
            token = db_token(db)
            key: Hashable | None = (
                None
                if token is None
                else (token, json.dumps(anchor_of(db).to_dict(), sort_keys=True))
            )
            if key is not None and self._state is not None and self._state[0] == key:
                return key, self._state[1]
            state = _home_state(db)
            self.state_loads += 1
        finally:
            db.conn.close()
        self._state = None if key is None else (key, state)
        return key, state

    def statuses(
        self,
        home: Home,
        manifests: dict[str, Manifest],
        identities: dict[str, Hashable],
        clock: datetime,
    ) -> dict[str, str]:
        with self._lock:
            home_key, state = self._home(home)
            out: dict[str, str] = {}
            for path, m in manifests.items():
                now = _claimed_now(state[2], clock, m.stream)
                expired = not m.expires > now
                ident = identities.get(path)
                hit = self._entries.get(path)
                if (
                    hit is not None
                    and home_key is not None
                    and ident is not None
                    and hit[:3] == (ident, home_key, expired)
                ):
                    out[path] = hit[3]
                    continue
                out[path] = _claimed_status(state, m, now)
                self.evaluations += 1
                if home_key is not None and ident is not None:
                    self._entries[path] = (ident, home_key, expired, out[path])
            for gone in set(self._entries) - set(manifests):
                del self._entries[gone]
            return out


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
    # ``bundle_identity`` of what was previewed: an import given it as ``expect_identity``
    # refuses any other bundle (``media_changed``). None: the documents did not read.
    identity: str | None = None

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
        with sqlite_errors():
            db = home.db()
            try:
                return _preview(db, path, witness_path)
            finally:
                db.conn.close()
    except ApplianceError as e:  # the home itself does not open, or does not read
        return BundlePreview(path, None, False, "not read", problem=e)


def _preview(db: Database, path: Path, witness_path: Path | None) -> BundlePreview:
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
        try:
            identity: str | None = bundle_identity(source)
        except ApplianceError:
            identity = None
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
            return BundlePreview(
                path, claimed, False, note, rows, problem=first or e, now=now, identity=identity
            )
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
        identity,
    )
