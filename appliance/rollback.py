"""Authorized rollback: move an artifact's active version back, once per signed authorization.

Connected side: ``authorize_rollback`` signs a ``RollbackAuthorization`` (a
random single-use ``id``, the artifact, the target version and optionally its
digest, a reason, an expiry, the sites) as a DSSE envelope with rollback keys.

Appliance side: ``apply_rollback``, under the home lock, in this order:
witness (exit 4 when the home is behind it or it is missing) -> the envelope
is authenticated against today's trust store *before* its payload is parsed
-> its signers must meet the ``rollback`` role's threshold (a publisher key:
``key_not_authorized``; a revoked key: ``revoked_key``; unsigned, unknown
keys or another kind of document: ``rollback_not_authorized``) -> the
artifact name (``authorization_mismatch``) -> the site
(``authorization_mismatch``) -> expiry against trusted time
(``authorization_expired``) -> single use (``authorization_reused``) -> the
target version is in the store (``not_found``, exit 2) and is not already
active (``already_active``, exit 2) -> the digest, when given, equals the
stored record's (``authorization_mismatch``). Then ONE transaction moves the
active pointer, marks the authorization used, raises the trusted-time floor
to the authorization's ``issued_at`` and appends a ``rollback`` audit event
naming who authorized it and why. The witness is refreshed after the commit.

Every refusal is an audit event (type ``rollback``, outcome ``rejected``)
and changes nothing else. The rollback does not hash the target: the first
load after it is an ordinary load (full re-hash and today's trust).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from appliance import audit, witness
from appliance.db import Database, transaction
from appliance.errors import (
    AlreadyActiveError,
    AuthorizationExpiredError,
    AuthorizationMismatchError,
    AuthorizationReusedError,
    MalformedAuthorizationError,
    RollbackNotAuthorizedError,
)
from appliance.home import Home, HomeLock
from appliance.store import active_version, find
from appliance.trust import KeyLabel, role_key
from appliance.truststore import load_trust, site, trusted_now
from bundles.documents import ROLLBACK_PAYLOAD_TYPE, RollbackAuthorization
from bundles.dsse import Envelope, sign_envelope, verify_envelope
from bundles.errors import (
    ApplianceError,
    EnvelopeFormatError,
    ManifestFormatError,
    NotFoundError,
    PayloadTypeError,
    RejectedError,
    StateSuspectError,
    UnknownKeyError,
    UnsignedError,
    UsageError,
)
from bundles.files import read_input_file, write_new_file
from bundles.keys import PrivateKey
from bundles.timeutil import format_time, utcnow

DEFAULT_VALIDITY = timedelta(days=7)
MAX_AUTHORIZATION_BYTES = 1 << 20

__all__ = [
    "RollbackCheck",
    "RollbackResult",
    "apply_rollback",
    "authorize_rollback",
    "evaluate_authorization",
    "read_authorization",
    "verify_authorization",
]


@dataclass(frozen=True)
class RollbackResult:
    name: str
    from_version: str | None
    to_version: str
    authorization_id: str
    authorized_by: list[str]
    reason: str
    digest: str
    warnings: list[str] = field(default_factory=list)  # after the commit (docs/CLI.md)
    labels: list[KeyLabel] = field(default_factory=list)  # authorizers, root-signed labels

    def to_dict(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"warnings": self.warnings} if self.warnings else {}
        return {
            **extra,
            "name": self.name,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "authorization_id": self.authorization_id,
            "authorized_by": self.authorized_by,
            "labels": self.labels,
            "reason": self.reason,
            "digest": {"blake3": self.digest},
        }


# --- connected side -----------------------------------------------------------------


def authorize_rollback(
    out: Path | None,
    name: str,
    to_version: str,
    keys: list[PrivateKey],
    *,
    reason: str = "",
    expires: datetime | None = None,
    digest: str | None = None,
    sites: tuple[str, ...] = (),
    issued_at: datetime | None = None,
    from_version: str | None = None,
) -> tuple[RollbackAuthorization, bytes]:
    """Sign a single-use rollback authorization; write it to ``out`` (never overwritten).

    Returns the authorization and the envelope bytes. With no ``sites`` it is
    valid at any site.
    """
    if not keys:
        raise UsageError("at least one rollback key (--key) is needed")
    issued = (issued_at or utcnow()).replace(microsecond=0)
    until = (expires or issued + DEFAULT_VALIDITY).replace(microsecond=0)
    if until <= issued:
        raise UsageError("the authorization would expire before it is issued")
    auth = RollbackAuthorization(
        id=secrets.token_hex(16),
        name=name,
        to_version=to_version,
        reason=reason,
        issued_at=issued,
        expires=until,
        digest=digest.lower() if digest else None,
        sites=tuple(sites),
        any_site=not sites,
        from_version=from_version,
    )
    payload = auth.to_payload()
    try:
        RollbackAuthorization.from_payload(payload)  # never sign what the appliance would refuse
    except RejectedError as e:
        raise UsageError(f"rollback authorization: {e.message}") from e
    data = sign_envelope(ROLLBACK_PAYLOAD_TYPE, payload, keys).to_bytes()
    if out is not None:
        write_new_file(out, data)
    return auth, data


# --- appliance side -----------------------------------------------------------------


def read_authorization(path: Path) -> bytes:
    """The authorization file's bytes (absent or unreadable: exit 3)."""
    return read_input_file(path, MAX_AUTHORIZATION_BYTES, "authorization")


def verify_authorization(db: Database, data: bytes) -> tuple[RollbackAuthorization, frozenset[str]]:
    """Authenticate, check the rollback role's threshold, then parse. Returns (auth, signers)."""
    if len(data) > MAX_AUTHORIZATION_BYTES:
        raise RollbackNotAuthorizedError("the authorization file is too large to be one")
    trust = load_trust(db)
    try:
        envelope = Envelope.from_bytes(data, max_bytes=MAX_AUTHORIZATION_BYTES)
        signers = verify_envelope(envelope, trust.resolver(), ROLLBACK_PAYLOAD_TYPE)
    except (EnvelopeFormatError, PayloadTypeError, UnsignedError, UnknownKeyError) as e:
        raise RollbackNotAuthorizedError(
            f"not a rollback authorization signed by a known key ({e.code}: {e.message})"
        ) from e
    counted = trust.check_signers(signers, role_key("rollback"))
    try:
        auth = RollbackAuthorization.from_payload(envelope.payload)
    except ManifestFormatError as e:
        raise MalformedAuthorizationError(f"malformed rollback authorization: {e.message}") from e
    return auth, counted


@dataclass(frozen=True)
class RollbackCheck:
    """One check of an authenticated authorization; ``error`` is what a refusal raises."""

    label: str
    ok: bool
    detail: str
    error: ApplianceError | None = None


def evaluate_authorization(
    db: Database, name: str, auth: RollbackAuthorization
) -> list[RollbackCheck]:
    """Every check after the signature, in order, none skipped (for previews and refusals)."""
    here = site(db)
    now = trusted_now(db, rollback=True)
    used = db.execute("SELECT used_at FROM used_authorizations WHERE id = ?", [auth.id]).fetchone()
    current = active_version(db, name)
    try:
        target_digest: str | None = find(db, name, auth.to_version).digest
        missing: NotFoundError | None = None
    except NotFoundError as e:
        target_digest, missing = None, e
    sites = ", ".join(auth.sites) if auth.sites else "any site"

    def check(label: str, ok: bool, detail: str, error: ApplianceError) -> RollbackCheck:
        return RollbackCheck(label, ok, detail, None if ok else error)

    digest_ok = auth.digest is None or auth.digest == target_digest
    return [
        check(
            "artifact",
            auth.name == name,
            f"{auth.name} (rolling back {name})",
            AuthorizationMismatchError(f"the authorization is for {auth.name!r}, not {name!r}"),
        ),
        check(
            "from",
            auth.from_version is None or auth.from_version == current,
            "any active version"
            if auth.from_version is None
            else f"only while {auth.from_version} is active; active now: {current or '-'}",
            AuthorizationMismatchError(
                f"the authorization undoes {name}@{auth.from_version}, but the active "
                f"version is {current or 'none'}"
            ),
        ),
        check(
            "site",
            auth.allows_site(here),
            f"{sites}; this appliance: {here or 'unnamed'}",
            AuthorizationMismatchError(
                f"the authorization is for site(s) {sites}, this appliance is {here or 'unnamed'}"
            ),
        ),
        check(
            "expiry",
            now < auth.expires,
            f"expires {format_time(auth.expires)}; trusted time {format_time(now)}",
            AuthorizationExpiredError(
                f"the authorization expired at {format_time(auth.expires)} "
                f"(trusted time is {format_time(now)})"
            ),
        ),
        check(
            "single use",
            used is None,
            "not used before" if used is None else f"already used at {used[0]}",
            AuthorizationReusedError(
                f"authorization {auth.id} was already used at {used[0] if used else ''}; "
                "each is single use"
            ),
        ),
        check(
            "target",
            missing is None,
            f"{name}@{auth.to_version} "
            + ("is in the store" if missing is None else "is not in the store"),
            missing or NotFoundError(f"no version {auth.to_version!r} of {name!r}"),
        ),
        check(
            "not active",
            current != auth.to_version,
            f"active now: {current or '-'}",
            AlreadyActiveError(f"{name}@{auth.to_version} is already the active version"),
        ),
        check(
            "digest",
            digest_ok,
            "not pinned (the next load re-hashes anyway)"
            if auth.digest is None
            else f"{auth.digest[:16]}... " + ("matches" if digest_ok else "does not match"),
            AuthorizationMismatchError(
                f"the authorization names digest {(auth.digest or '')[:16]}..., the stored "
                f"{name}@{auth.to_version} is {(target_digest or 'absent')[:16]}..."
            ),
        ),
    ]


def _check(db: Database, name: str, auth: RollbackAuthorization) -> tuple[str | None, str]:
    """Raise the first failing check; returns (from_version, target digest)."""
    for c in evaluate_authorization(db, name, auth):
        if c.error is not None:
            raise c.error
    return active_version(db, name), find(db, name, auth.to_version).digest


def _refuse(
    db: Database,
    error: ApplianceError,
    name: str,
    auth: RollbackAuthorization | None,
    source: str,
) -> None:
    detail: dict[str, Any] = {"source": source, "message": error.message}
    if auth is not None:
        detail.update(authorization_id=auth.id, to_version=auth.to_version, reason=auth.reason)
    with transaction(db):
        audit.append(
            db,
            "rollback",
            outcome="rejected",
            code=error.code,
            name=name,
            version=auth.to_version if auth else None,
            detail=detail,
        )


def apply_rollback(
    home: Home,
    name: str,
    data: bytes,
    *,
    witness_path: Path | None = None,
    wait: bool = False,
    source: str = "",
) -> RollbackResult:
    """Verify a rollback authorization and move NAME's active version (see module doc)."""
    db = home.db()
    try:
        with HomeLock(home, wait=wait):
            wpath = witness.configured_path(db, witness_path)
            auth: RollbackAuthorization | None = None
            try:
                witness.require_current(db, wpath)
                auth, signers = verify_authorization(db, data)
                current, digest = _check(db, name, auth)
            except (RejectedError, StateSuspectError, UsageError) as e:
                _refuse(db, e, name, auth, source)
                raise
            result = RollbackResult(
                name=name,
                from_version=current,
                to_version=auth.to_version,
                authorization_id=auth.id,
                authorized_by=sorted(signers),
                reason=auth.reason,
                digest=digest,
                labels=load_trust(db).key_labels(sorted(signers)),
            )
            _commit(db, auth, data, result, source)
            result.warnings.extend(witness.refresh_after_commit(db, wpath))
        return result
    finally:
        db.conn.close()


def _commit(
    db: Database,
    auth: RollbackAuthorization,
    envelope: bytes,
    result: RollbackResult,
    source: str,
) -> None:
    """One transaction: pointer, used authorization (with its envelope: provenance), audit."""
    now = format_time(utcnow())
    trust = load_trust(db)
    with transaction(db):
        moved = db.execute(
            "UPDATE active SET version = ?, moved_at = ? WHERE name = ?",
            [result.to_version, now, result.name],
        )
        if moved.rowcount != 1:
            raise NotFoundError(f"no active version of {result.name!r} to move")
        db.execute(
            "INSERT INTO used_authorizations (id, name, used_at, to_version, envelope)"
            " VALUES (?, ?, ?, ?, ?)",
            [auth.id, result.name, now, result.to_version, envelope],
        )
        audit.append(
            db,
            "rollback",
            outcome="accepted",
            name=result.name,
            version=result.to_version,
            detail={
                "from_version": result.from_version,
                "to_version": result.to_version,
                "authorization_id": auth.id,
                "authorized_by": result.authorized_by,
                "reason": auth.reason,
                "digest": result.digest,
                "issued_at": format_time(auth.issued_at),
                "expires": format_time(auth.expires),
                "source": source,
                "from_version_required": auth.from_version,
                # the rule it met, judged at the time of the act (see appliance.provenance)
                "trust_version": trust.version,
                "threshold": trust.threshold(role_key("rollback")),
            },
        )
