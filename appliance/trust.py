"""The trust state machine: roles, thresholds, revocation, root rotation.

Pure: no I/O. ``TrustState`` is loaded and saved by ``appliance.truststore``.
Policy questions ("do these signers meet the publisher threshold of stream
S?") and trust updates ("does this root-signed document move us to N+1?") are
answered here and tested directly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from appliance.errors import (
    KeyNotAuthorizedError,
    RevokedKeyError,
    RevokedKeyReuseError,
    RoleConflictError,
    RootRotationError,
    RootUnusableError,
    ThresholdError,
    TrustUpdateReplayError,
    TrustUpdateUnauthorizedError,
    TrustUpdateVersionError,
)
from bundles.documents import (
    TRUST_PAYLOAD_TYPE,
    AddKey,
    AddModelSigner,
    AllowLoader,
    DenyLoader,
    RequireModelSignature,
    ResetStream,
    ResetTime,
    RevokeKey,
    RotateRoot,
    SetThreshold,
    TrustUpdate,
)
from bundles.dsse import Envelope, KeyResolver, verify_envelope
from bundles.errors import RejectedError, SignatureError, UnknownKeyError
from bundles.keys import EcPublicKey, PublicKey

RoleKey = tuple[str, str]  # (role, stream); stream is "" for root and rollback


def role_key(role: str, stream: str | None = None) -> RoleKey:
    return (role, stream or "")


def describe(role: RoleKey) -> str:
    return f"{role[0]}:{role[1]}" if role[1] else role[0]


def key_text(keyid: str, label: str | None) -> str:
    """How a key is shown to people: ``LABEL (KEYID-PREFIX)``, or the 16-hex prefix alone."""
    return f"{label} ({keyid[:16]})" if label else keyid[:16]


KeyLabel = dict[str, str | None]  # {"keyid": ..., "label": ... or None}


def key_labels(keyids: Iterable[str], state: TrustState | None) -> list[KeyLabel]:
    """``[{"keyid", "label"}, ...]`` for JSON, in the order given: each key id with its
    root-signed label (null when it has none, or when no signed trust state is at hand)."""
    return [{"keyid": k, "label": state.label(k) if state else None} for k in keyids]


def labels_text(labels: Iterable[KeyLabel]) -> str:
    """``key_labels`` entries as people read them, comma-separated (``key_text``)."""
    return ", ".join(key_text(str(e["keyid"]), e["label"]) for e in labels)


@dataclass(frozen=True)
class KeyEntry:
    key: PublicKey
    role: RoleKey
    added_version: int
    revoked_version: int | None = None


@dataclass(frozen=True)
class LoaderGrant:
    """Issue 11: ``principal`` (a user name or ``unit:NAME.service``) may load from ``stream``
    (only ``artifacts`` when non-empty; the active version only unless ``any_version``).
    """

    principal: str
    stream: str
    artifacts: tuple[str, ...] = ()
    any_version: bool = False
    version: int = 0  # the trust version that granted it

    def covers(self, name: str, stream: str, active: bool) -> bool:
        return (
            self.stream == stream
            and (not self.artifacts or name in self.artifacts)
            and (active or self.any_version)
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "loader": self.principal,
            "stream": self.stream,
            "artifacts": list(self.artifacts),
            "any_version": self.any_version,
            "trust_version": self.version,
        }


@dataclass(frozen=True)
class ModelSignerEntry:
    """Issue 17: an ECDSA key of the ``model-signer`` role of one stream."""

    key: EcPublicKey
    stream: str
    added_version: int
    name: str | None = None


@dataclass(frozen=True)
class TrustState:
    version: int
    keys: dict[str, KeyEntry] = field(default_factory=dict)
    thresholds: dict[RoleKey, int] = field(default_factory=dict)
    revoked: frozenset[str] = frozenset()  # includes ids never added (pre-emptive revocation)
    labels: dict[str, str] = field(default_factory=dict)  # key id -> a name for people
    grants: tuple[LoaderGrant, ...] = ()  # issue 11: who may load through the service
    # issue 17: model-signer keys (ECDSA; revoked ones stay, listed in ``revoked``) and the
    # streams whose bundles need a valid OpenSSF model signature
    model_signers: dict[str, ModelSignerEntry] = field(default_factory=dict)
    model_signature_required: frozenset[str] = frozenset()

    @classmethod
    def initial(cls, root_keys: list[PublicKey], threshold: int) -> TrustState:
        if not root_keys:
            raise ValueError("at least one root key is required")
        if not 1 <= threshold <= len(root_keys):
            raise ValueError(f"root threshold must be between 1 and {len(root_keys)}")
        keys = {k.keyid: KeyEntry(k, ("root", ""), 1) for k in root_keys}
        return cls(version=1, keys=keys, thresholds={("root", ""): threshold})

    def resolver(self) -> KeyResolver:
        """Every key we ever knew, revoked ones too (so revocation gets its own error)."""
        return lambda keyid: self.keys[keyid].key if keyid in self.keys else None

    def label(self, keyid: str) -> str | None:
        """The root-signed label of a key (``--add-key PUB --name LABEL``), if any."""
        if keyid in self.labels:
            return self.labels[keyid]
        model = self.model_signers.get(keyid)
        return model.name if model is not None else None

    def key_labels(self, keyids: Iterable[str]) -> list[KeyLabel]:
        """``key_labels`` under this state."""
        return key_labels(keyids, self)

    def members(self, role: RoleKey) -> set[str]:
        return {kid for kid, e in self.keys.items() if e.role == role and kid not in self.revoked}

    def threshold(self, role: RoleKey) -> int:
        return self.thresholds.get(role, 1)

    def check_signers(self, signers: frozenset[str], role: RoleKey) -> frozenset[str]:
        """The signers that count for ``role``; raise when they do not meet its threshold."""
        counted = frozenset(s for s in signers if s in self.members(role))
        need = self.threshold(role)
        if len(counted) >= need:
            return counted
        revoked = signers & self.revoked
        if revoked:
            raise RevokedKeyError(
                f"signed by revoked key {sorted(revoked)[0][:16]}; "
                f"{len(counted)} of {need} valid {describe(role)} signatures"
            )
        if not counted:
            holders = sorted({describe(self.keys[s].role) for s in signers if s in self.keys})
            raise KeyNotAuthorizedError(
                f"no signature by a {describe(role)} key (signed by {', '.join(holders)} keys)"
            )
        raise ThresholdError(f"{len(counted)} of {need} required {describe(role)} signatures")


def _root_signers(envelope: Envelope, resolver: KeyResolver) -> frozenset[str]:
    try:
        return verify_envelope(envelope, resolver, TRUST_PAYLOAD_TYPE)
    except UnknownKeyError as e:
        raise TrustUpdateUnauthorizedError(
            "trust update is not signed by any key of the root in force"
        ) from e


def apply_update(state: TrustState, envelope: Envelope) -> tuple[TrustState, TrustUpdate]:
    """Verify a trust update against ``state`` and return the next state.

    Verify before parse: the envelope is authenticated against the current
    keys first; only then is the payload parsed. A root rotation must also be
    signed by a threshold of the new root set.
    """
    signers = _root_signers(envelope, state.resolver())
    try:
        state.check_signers(signers, ("root", ""))
    except RejectedError as e:
        raise TrustUpdateUnauthorizedError(f"trust update not authorized by root: {e}") from e
    update = TrustUpdate.from_payload(envelope.payload)
    if update.version <= state.version:
        raise TrustUpdateReplayError(
            f"trust update version {update.version} is not newer than {state.version}"
        )
    if update.version != state.version + 1:
        raise TrustUpdateVersionError(
            f"trust update version {update.version} skips ahead of {state.version} + 1"
        )
    new_root = update.new_root
    if new_root is not None:
        table = {k.keyid: k for k in new_root.keys}
        try:
            new_signers = verify_envelope(envelope, table.get, TRUST_PAYLOAD_TYPE)
        except (UnknownKeyError, SignatureError) as e:
            raise RootRotationError("new root set did not sign the rotation") from e
        if len(new_signers) < new_root.threshold:
            raise RootRotationError(
                f"{len(new_signers)} of {new_root.threshold} new root signatures"
            )
    return _apply_operations(state, update), update


def _apply_operations(state: TrustState, update: TrustUpdate) -> TrustState:
    keys = dict(state.keys)
    thresholds = dict(state.thresholds)
    revoked = set(state.revoked)
    labels = dict(state.labels)
    grants = list(state.grants)
    model_signers = dict(state.model_signers)
    required = set(state.model_signature_required)
    v = update.version
    for op in update.operations:
        if isinstance(op, AddKey):
            kid = op.key.keyid
            if kid in revoked:
                raise RevokedKeyReuseError(f"key {kid[:16]} was revoked and cannot be re-added")
            role = role_key(op.role, op.stream)
            if kid in keys and keys[kid].role != role:
                raise RoleConflictError(
                    f"key {kid[:16]} already holds role {describe(keys[kid].role)}; "
                    "one key, one role",
                )
            keys[kid] = KeyEntry(op.key, role, v)
            if op.name is not None:
                labels[kid] = op.name
        elif isinstance(op, RevokeKey):
            revoked.add(op.keyid)
            if op.keyid in keys:
                keys[op.keyid] = replace(keys[op.keyid], revoked_version=v)
        elif isinstance(op, SetThreshold):
            thresholds[role_key(op.role, op.stream)] = op.threshold
        elif isinstance(op, RotateRoot):
            for kid, entry in list(keys.items()):
                if entry.role == ("root", "") and kid not in {k.keyid for k in op.keys}:
                    del keys[kid]
            for k in op.keys:
                if k.keyid in revoked:
                    raise RevokedKeyReuseError(f"root key {k.keyid[:16]} was revoked")
                if k.keyid in keys and keys[k.keyid].role != ("root", ""):
                    raise RoleConflictError(f"key {k.keyid[:16]} holds another role")
                keys[k.keyid] = KeyEntry(k, ("root", ""), v)
            thresholds[("root", "")] = op.threshold
        elif isinstance(op, ResetStream | ResetTime):
            pass  # no key state: appliance.evidence applies resets to marks and time floors
        elif isinstance(op, AllowLoader):
            grant = LoaderGrant(op.principal, op.stream, op.artifacts, op.any_version, v)
            grants = [g for g in grants if (g.principal, g.stream) != (op.principal, op.stream)]
            grants.append(grant)
        elif isinstance(op, DenyLoader):
            grants = [g for g in grants if g.principal != op.principal]
        elif isinstance(op, AddModelSigner):
            kid = op.key.keyid
            if kid in revoked:
                raise RevokedKeyReuseError(f"key {kid[:16]} was revoked and cannot be re-added")
            if kid in model_signers and model_signers[kid].stream != op.stream:
                raise RoleConflictError(
                    f"key {kid[:16]} already signs models of stream {model_signers[kid].stream}; "
                    "one key, one role"
                )
            model_signers[kid] = ModelSignerEntry(op.key, op.stream, v, op.name)
        elif isinstance(op, RequireModelSignature):
            (required.add if op.required else required.discard)(op.stream)
    new = replace(
        state,
        version=v,
        keys=keys,
        thresholds=thresholds,
        revoked=frozenset(revoked),
        labels=labels,
        grants=tuple(grants),
        model_signers=model_signers,
        model_signature_required=frozenset(required),
    )
    roots = new.members(("root", ""))
    if new.threshold(("root", "")) > len(roots):
        raise RootUnusableError(
            f"update would leave {len(roots)} root keys for a threshold of "
            f"{new.threshold(('root', ''))}",
        )
    return new
