"""Signed documents other than the manifest: trust updates and rollback authorizations.

Both are DSSE payloads in RFC 8785 canonical JSON, validated strictly like the
manifest. Whether their signers are allowed to make them is the appliance's
decision (``appliance.trust``); these classes only say what a document claims.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bundles.canonical import canonical_bytes, parse_json
from bundles.fields import as_hex, as_int, as_str, as_time, fail, require_object
from bundles.keys import EcPublicKey, PublicKey
from bundles.names import check_artifact_name, check_identifier, check_unique
from bundles.timeutil import format_time

TRUST_PAYLOAD_TYPE = "application/vnd.appliance.trust-update+json"
TRUST_TYPE = "appliance/trust-update/v1"
ROLLBACK_PAYLOAD_TYPE = "application/vnd.appliance.rollback-authorization+json"
ROLLBACK_TYPE = "appliance/rollback-authorization/v1"
MAX_DOC_BYTES = 1024 * 1024
MAX_OPERATIONS = 1024
ROLES = ("root", "publisher", "rollback")
_ID = re.compile(r"^[0-9a-f]{32}$")
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._@+-]{0,63}$")


def check_label(value: Any, what: str) -> str:
    """A key label: 1 to 64 printable ASCII letters, digits and ``._@+-`` or spaces."""
    if not isinstance(value, str) or not _LABEL.match(value):
        raise fail(f"{what}: a label is 1 to 64 letters, digits, spaces or ._@+- characters")
    return value


def _role_stream(role: Any, stream: Any, what: str) -> tuple[str, str | None]:
    if role not in ROLES:
        raise fail(f"{what}: role must be one of {', '.join(ROLES)}")
    if role == "publisher":
        return role, check_identifier(stream, f"{what} stream")
    if stream is not None:
        raise fail(f"{what}: only the publisher role is per stream")
    return role, None


def _pem(value: Any, what: str) -> PublicKey:
    text = as_str(value, what, 4096)
    return PublicKey.from_pem(text.encode("ascii", "replace"))


@dataclass(frozen=True)
class AddKey:
    key: PublicKey
    role: str
    stream: str | None
    name: str | None = None  # a label for people ("alice-laptop"); shown beside the key id

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "op": "add_key",
            "public_key": self.key.to_pem().decode(),
            "role": self.role,
            "stream": self.stream,
        }
        if self.name is not None:
            out["name"] = self.name
        return out


@dataclass(frozen=True)
class RevokeKey:
    keyid: str

    def to_dict(self) -> dict[str, Any]:
        return {"op": "revoke", "keyid": self.keyid}


@dataclass(frozen=True)
class SetThreshold:
    role: str
    stream: str | None
    threshold: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "op": "threshold",
            "role": self.role,
            "stream": self.stream,
            "threshold": self.threshold,
        }


@dataclass(frozen=True)
class RotateRoot:
    keys: tuple[PublicKey, ...]
    threshold: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "op": "rotate_root",
            "public_keys": [k.to_pem().decode() for k in self.keys],
            "threshold": self.threshold,
        }


@dataclass(frozen=True)
class ResetStream:
    """Fast-forward recovery: set a stream's high-water mark back to ``sequence``.

    Manifests of the stream accepted before this update no longer count for its
    high-water mark or its time floor (a compromised publisher key's huge sequence
    or far-future ``issued_at`` is undone).
    """

    stream: str
    sequence: int

    def to_dict(self) -> dict[str, Any]:
        return {"op": "reset_stream", "stream": self.stream, "sequence": self.sequence}


@dataclass(frozen=True)
class ResetTime:
    """Fast-forward recovery: set the trusted-time floor of every stream back to ``time``."""

    time: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"op": "reset_time", "time": format_time(self.time)}


# Issue 11: loader grants. A principal is a user name or ``unit:NAME.service``.
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,30}[a-z0-9_$-]?$")
_UNIT = re.compile(r"^unit:[A-Za-z0-9:_.@\\-]{1,240}\.service$")
MAX_GRANT_ARTIFACTS = 1024


def check_principal(value: Any, what: str = "loader") -> str:
    """A user name (POSIX portable, at most 32 bytes) or ``unit:NAME.service``."""
    if not isinstance(value, str) or not (_USER.match(value) or _UNIT.match(value)):
        raise fail(f"{what} must be a user name or unit:NAME.service, not {value!r}")
    return value


@dataclass(frozen=True)
class AllowLoader:
    """Let ``principal`` load artifacts of ``stream`` (only ``artifacts`` when given)."""

    principal: str
    stream: str
    artifacts: tuple[str, ...] = ()
    any_version: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "op": "allow_loader",
            "loader": self.principal,
            "stream": self.stream,
            "artifacts": list(self.artifacts),
            "any_version": self.any_version,
        }


@dataclass(frozen=True)
class DenyLoader:
    """Withdraw every grant of ``principal``."""

    principal: str

    def to_dict(self) -> dict[str, Any]:
        return {"op": "deny_loader", "loader": self.principal}


@dataclass(frozen=True)
class AddModelSigner:
    """Issue 17: an ECDSA key of the ``model-signer`` role of one stream (OpenSSF model-signing)."""

    key: EcPublicKey
    stream: str
    name: str | None = None  # a label, shown beside the key id

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "op": "add_model_signer",
            "public_key": self.key.to_pem().decode(),
            "stream": self.stream,
        }
        if self.name is not None:
            d["name"] = self.name
        return d


@dataclass(frozen=True)
class RequireModelSignature:
    """Issue 17: a stream's bundles need (or no longer need) a valid model signature."""

    stream: str
    required: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"op": "require_model_signature", "stream": self.stream, "required": self.required}


Operation = (
    AddKey
    | RevokeKey
    | SetThreshold
    | RotateRoot
    | ResetStream
    | ResetTime
    | AllowLoader
    | DenyLoader
    | AddModelSigner
    | RequireModelSignature
)


def _operation(i: int, raw: Any) -> Operation:
    what = f"operations[{i}]"
    if not isinstance(raw, dict) or not isinstance(raw.get("op"), str):
        raise fail(f"{what} must be an object with an op")
    op = raw["op"]
    if op == "add_key":
        d = require_object(raw, what, {"op", "public_key", "role", "stream"}, frozenset({"name"}))
        role, stream = _role_stream(d["role"], d["stream"], what)
        if role == "root":
            raise fail(f"{what}: root keys change only by rotate_root")
        label = None if d.get("name") is None else check_label(d["name"], f"{what}.name")
        return AddKey(_pem(d["public_key"], f"{what}.public_key"), role, stream, label)
    if op == "revoke":
        d = require_object(raw, what, {"op", "keyid"})
        return RevokeKey(as_hex(d["keyid"], f"{what}.keyid"))
    if op == "threshold":
        d = require_object(raw, what, {"op", "role", "stream", "threshold"})
        role, stream = _role_stream(d["role"], d["stream"], what)
        return SetThreshold(role, stream, as_int(d["threshold"], f"{what}.threshold", 1))
    if op == "rotate_root":
        d = require_object(raw, what, {"op", "public_keys", "threshold"})
        pems = d["public_keys"]
        if not isinstance(pems, list) or not pems or len(pems) > 64:
            raise fail(f"{what}.public_keys must be a list of 1 to 64 keys")
        keys = tuple(_pem(p, f"{what}.public_keys") for p in pems)
        check_unique((k.keyid for k in keys), "root key")
        threshold = as_int(d["threshold"], f"{what}.threshold", 1)
        if threshold > len(keys):
            raise fail(f"{what}: threshold {threshold} exceeds {len(keys)} keys")
        return RotateRoot(keys, threshold)
    if op == "reset_stream":
        d = require_object(raw, what, {"op", "stream", "sequence"})
        return ResetStream(
            check_identifier(d["stream"], f"{what}.stream"),
            as_int(d["sequence"], f"{what}.sequence", 0),
        )
    if op == "reset_time":
        d = require_object(raw, what, {"op", "time"})
        return ResetTime(as_time(d["time"], f"{what}.time"))
    if op == "allow_loader":
        d = require_object(raw, what, {"op", "loader", "stream", "artifacts", "any_version"})
        names = d["artifacts"]
        if not isinstance(names, list) or len(names) > MAX_GRANT_ARTIFACTS:
            raise fail(f"{what}.artifacts must be a list of at most {MAX_GRANT_ARTIFACTS}")
        if not isinstance(d["any_version"], bool):
            raise fail(f"{what}.any_version must be a boolean")
        artifacts = tuple(check_artifact_name(n) for n in names)
        check_unique(artifacts, "artifact")
        return AllowLoader(
            check_principal(d["loader"], f"{what}.loader"),
            check_identifier(d["stream"], f"{what}.stream"),
            artifacts,
            d["any_version"],
        )
    if op == "deny_loader":
        d = require_object(raw, what, {"op", "loader"})
        return DenyLoader(check_principal(d["loader"], f"{what}.loader"))
    if op == "add_model_signer":
        d = require_object(raw, what, {"op", "public_key", "stream"}, frozenset({"name"}))
        text = as_str(d["public_key"], f"{what}.public_key", 4096)
        name = None if "name" not in d else as_str(d["name"], f"{what}.name", 128)
        if name is not None and (not name or not name.isprintable()):
            raise fail(f"{what}.name must be printable text")
        return AddModelSigner(
            EcPublicKey.from_pem(text.encode("ascii", "replace")),
            check_identifier(d["stream"], f"{what} stream"),
            name,
        )
    if op == "require_model_signature":
        d = require_object(raw, what, {"op", "stream", "required"})
        if not isinstance(d["required"], bool):
            raise fail(f"{what}.required must be a boolean")
        return RequireModelSignature(check_identifier(d["stream"], f"{what} stream"), d["required"])
    raise fail(f"{what}: unknown op {op!r}")


@dataclass(frozen=True)
class TrustUpdate:
    version: int
    issued_at: datetime
    operations: tuple[Operation, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": TRUST_TYPE,
            "version": self.version,
            "issued_at": format_time(self.issued_at),
            "operations": [op.to_dict() for op in self.operations],
        }

    def to_payload(self) -> bytes:
        return canonical_bytes(self.to_dict())

    @property
    def new_root(self) -> RotateRoot | None:
        rotations = [op for op in self.operations if isinstance(op, RotateRoot)]
        return rotations[-1] if rotations else None

    @classmethod
    def from_payload(cls, payload: bytes) -> TrustUpdate:
        doc = require_object(
            parse_json(payload, what="trust update", max_bytes=MAX_DOC_BYTES),
            "trust update",
            {"type", "version", "issued_at", "operations"},
        )
        if doc["type"] != TRUST_TYPE:
            raise fail(f"trust update type must be {TRUST_TYPE}")
        ops = doc["operations"]
        if not isinstance(ops, list) or not ops or len(ops) > MAX_OPERATIONS:
            raise fail(f"operations must be a list of 1 to {MAX_OPERATIONS} entries")
        operations = tuple(_operation(i, op) for i, op in enumerate(ops))
        if sum(isinstance(op, RotateRoot) for op in operations) > 1:
            raise fail("a trust update rotates the root at most once")
        return cls(
            as_int(doc["version"], "version", 2), as_time(doc["issued_at"], "issued_at"), operations
        )


@dataclass(frozen=True)
class RollbackAuthorization:
    id: str
    name: str
    to_version: str
    reason: str
    issued_at: datetime
    expires: datetime
    digest: str | None = None
    sites: tuple[str, ...] = ()
    any_site: bool = True
    from_version: str | None = None  # valid only while this version is active

    def to_dict(self) -> dict[str, Any]:
        out = {
            "type": ROLLBACK_TYPE,
            "id": self.id,
            "name": self.name,
            "to_version": self.to_version,
            "digest": self.digest,
            "reason": self.reason,
            "issued_at": format_time(self.issued_at),
            "expires": format_time(self.expires),
            "sites": list(self.sites),
            "any_site": self.any_site,
        }
        if self.from_version is not None:
            out["from_version"] = self.from_version
        return out

    def to_payload(self) -> bytes:
        return canonical_bytes(self.to_dict())

    def allows_site(self, site: str | None) -> bool:
        return self.any_site or (site is not None and site in self.sites)

    @classmethod
    def from_payload(cls, payload: bytes) -> RollbackAuthorization:
        d = require_object(
            parse_json(payload, what="rollback authorization", max_bytes=MAX_DOC_BYTES),
            "rollback authorization",
            {
                "type",
                "id",
                "name",
                "to_version",
                "digest",
                "reason",
                "issued_at",
                "expires",
                "sites",
                "any_site",
            },
            frozenset({"from_version"}),
        )
        if d["type"] != ROLLBACK_TYPE:
            raise fail(f"rollback authorization type must be {ROLLBACK_TYPE}")
        if not isinstance(d["id"], str) or not _ID.match(d["id"]):
            raise fail("id must be 32 lowercase hex characters")
        sites = d["sites"]
        if not isinstance(sites, list) or not isinstance(d["any_site"], bool):
            raise fail("sites must be a list and any_site a boolean")
        if d["any_site"] == bool(sites):
            raise fail("an authorization names its sites or says any_site, exactly one")
        issued, expires = as_time(d["issued_at"], "issued_at"), as_time(d["expires"], "expires")
        if expires <= issued:
            raise fail("expires must be after issued_at")
        return cls(
            id=d["id"],
            name=check_artifact_name(d["name"]),
            to_version=check_identifier(d["to_version"], "to_version"),
            reason=as_str(d["reason"], "reason", 4096),
            issued_at=issued,
            expires=expires,
            digest=None if d["digest"] is None else as_hex(d["digest"], "digest"),
            sites=tuple(check_identifier(s, "site") for s in sites),
            any_site=d["any_site"],
            from_version=None
            if d.get("from_version") is None
            else check_identifier(d["from_version"], "from_version"),
        )


__all__ = [
    "ROLLBACK_PAYLOAD_TYPE",
    "TRUST_PAYLOAD_TYPE",
    "AddKey",
    "AllowLoader",
    "DenyLoader",
    "Operation",
    "ResetStream",
    "ResetTime",
    "AddModelSigner",
    "Operation",
    "RequireModelSignature",
    "RevokeKey",
    "RollbackAuthorization",
    "RotateRoot",
    "SetThreshold",
    "TrustUpdate",
    "check_label",
    "check_principal",
]
