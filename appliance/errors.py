"""Exit codes and the one function that maps an exception to an exit code.

The exception roots live in ``bundles.errors`` (the lowest floor) and are
re-exported here with the appliance's own policy, state and rollback errors.
"""

from __future__ import annotations

from enum import IntEnum

from bundles.errors import (
    ApplianceError,
    NotFoundError,
    OperationalError,
    RejectedError,
    StateSuspectError,
    UsageError,
)


class ExitCode(IntEnum):
    OK = 0
    REJECTED = 1
    USAGE = 2
    OPERATIONAL = 3
    STATE_SUSPECT = 4


def exit_code_for(exc: BaseException) -> ExitCode:
    """The contractual exit code of any exception (unknown ones are operational)."""
    if isinstance(exc, StateSuspectError):
        return ExitCode.STATE_SUSPECT
    if isinstance(exc, RejectedError):
        return ExitCode.REJECTED
    if isinstance(exc, UsageError):
        return ExitCode.USAGE
    return ExitCode.OPERATIONAL


# --- policy (exit 1) ------------------------------------------------------------


class PolicyError(RejectedError):
    code = "policy_rejected"


class ThresholdError(PolicyError):
    code = "threshold_not_met"


class KeyNotAuthorizedError(PolicyError):
    """A known key signed outside its role or stream."""

    code = "key_not_authorized"


class RevokedKeyError(PolicyError):
    code = "revoked_key"


class SequenceReplayError(PolicyError):
    """The same sequence as the high-water mark: a replayed bundle."""

    code = "sequence_replayed"


class SequenceOlderError(PolicyError):
    """A sequence below the high-water mark: a rollback attack."""

    code = "sequence_older"


class ReleaseCounterError(PolicyError):
    code = "release_counter_not_increasing"


class ExpiredError(PolicyError):
    code = "expired"


class WrongSiteError(PolicyError):
    code = "wrong_site"


class VersionConflictError(PolicyError):
    """The same name@version already in the store with other bytes."""

    code = "version_conflict"


class NameOwnershipError(PolicyError):
    """An artifact name that belongs to another stream."""

    code = "name_owned_by_other_stream"


class TrustUpdateError(PolicyError):
    code = "trust_update_rejected"


class TrustUpdateReplayError(TrustUpdateError):
    code = "trust_update_replayed"


class TrustUpdateVersionError(TrustUpdateError):
    """A version that skips ahead (not exactly current + 1)."""

    code = "trust_update_version_gap"


class TrustUpdateUnauthorizedError(TrustUpdateError):
    """Not signed by a threshold of the root in force (a forged update)."""

    code = "trust_update_not_authorized"


class RootRotationError(TrustUpdateError):
    """A new root set not signed by a threshold of the old and of the new."""

    code = "root_rotation_not_cosigned"


class RevokedKeyReuseError(TrustUpdateError):
    code = "revoked_key_readded"


# --- rollback (exit 1) ------------------------------------------------------------


class RollbackError(PolicyError):
    code = "rollback_rejected"


class RollbackNotAuthorizedError(RollbackError):
    code = "rollback_not_authorized"


class AuthorizationExpiredError(RollbackError):
    code = "authorization_expired"


class AuthorizationReusedError(RollbackError):
    code = "authorization_reused"


class AuthorizationMismatchError(RollbackError):
    """Authorization for another artifact, version, digest or site."""

    code = "authorization_mismatch"


# --- state (exit 4) ---------------------------------------------------------------


class ObjectTamperedError(StateSuspectError):
    code = "object_tampered"


class AuditChainError(StateSuspectError):
    code = "audit_chain_broken"


class StateRolledBackError(StateSuspectError):
    code = "state_rolled_back"


class WitnessMissingError(StateSuspectError):
    code = "witness_missing"


class StoreCorruptError(StateSuspectError):
    code = "store_corrupt"


# --- operational (exit 3) -----------------------------------------------------------


class LockHeldError(OperationalError):
    code = "lock_held"


class NotInitializedError(OperationalError):
    code = "not_initialized"


class AlreadyInitializedError(OperationalError):
    code = "already_initialized"


class DiskFullError(OperationalError):
    code = "disk_full"


# --- issue 17: OpenSSF model signatures (exit 1) ------------------------------------


class ModelSignatureError(PolicyError):
    code = "model_signature_rejected"


class ModelSignatureMissingError(ModelSignatureError):
    """The stream requires a model signature and an artifact is covered by none."""

    code = "model_signature_missing"


class ModelSignatureInvalidError(ModelSignatureError):
    """A malformed signature file, a bad signature, an unknown, revoked or foreign key."""

    code = "model_signature_invalid"


class ModelSignatureMismatchError(ModelSignatureError):
    """The signed files differ from the bundle's: a digest, a file missing or extra."""

    code = "model_signature_mismatch"


__all__ = [
    "AlreadyInitializedError",
    "ApplianceError",
    "AuditChainError",
    "AuthorizationExpiredError",
    "AuthorizationMismatchError",
    "AuthorizationReusedError",
    "DiskFullError",
    "ExitCode",
    "ExpiredError",
    "KeyNotAuthorizedError",
    "LockHeldError",
    "ModelSignatureError",
    "ModelSignatureInvalidError",
    "ModelSignatureMismatchError",
    "ModelSignatureMissingError",
    "NameOwnershipError",
    "NotFoundError",
    "NotInitializedError",
    "ObjectTamperedError",
    "OperationalError",
    "PolicyError",
    "RejectedError",
    "ReleaseCounterError",
    "RevokedKeyError",
    "RevokedKeyReuseError",
    "RollbackError",
    "RollbackNotAuthorizedError",
    "RootRotationError",
    "SequenceOlderError",
    "SequenceReplayError",
    "StateRolledBackError",
    "StateSuspectError",
    "StoreCorruptError",
    "ThresholdError",
    "TrustUpdateError",
    "TrustUpdateReplayError",
    "TrustUpdateUnauthorizedError",
    "TrustUpdateVersionError",
    "UsageError",
    "VersionConflictError",
    "WitnessMissingError",
    "WrongSiteError",
    "exit_code_for",
]
