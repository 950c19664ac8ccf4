"""Every error class of the appliance, one per code, and the one exit-code function.

The roots, ``ExitCode`` and the errors the bundle format and media raise live
in ``bundles.errors`` (the lowest floor, shared with the connected side) and
are re-exported here; the appliance's own policy, state, rollback and
operational errors are defined below. No other module defines an error class.
Each code is documented in docs/CLI.md (a test checks that every code is).
"""

from __future__ import annotations

from bundles.errors import (
    ApplianceError,
    BundleNotFoundError,
    ExitCode,
    InputNotFoundError,
    IOFailedError,
    KeyExistsError,
    KeyFileNotFoundError,
    MediaChangedError,
    MediaError,
    NotABundleError,
    NotFoundError,
    OperationalError,
    OutputExistsError,
    RejectedError,
    SourceChangedError,
    StateSuspectError,
    UsageError,
)


def exit_code_for(exc: BaseException) -> ExitCode:
    """The contractual exit code of any exception: its root's ``exit_code``.

    An exception that is not an ``ApplianceError`` (a bug) is operational.
    """
    if isinstance(exc, ApplianceError):
        return ExitCode(exc.exit_code)
    return ExitCode.OPERATIONAL


def all_error_classes() -> dict[str, type[ApplianceError]]:
    """Every error class by its code (one class per code; a test holds it so)."""
    found: dict[str, type[ApplianceError]] = {}
    todo: list[type[ApplianceError]] = [ApplianceError]
    while todo:
        cls = todo.pop()
        found.setdefault(cls.code, cls)
        todo.extend(cls.__subclasses__())
    return found


def error_class(code: str, default: type[ApplianceError]) -> type[ApplianceError]:
    """The class of ``code`` (to re-raise a recorded refusal under its own class)."""
    return all_error_classes().get(code, default)


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


class RoleConflictError(TrustUpdateError):
    """One key, one role: an update gives a key a second role."""

    code = "role_conflict"


class RootUnusableError(TrustUpdateError):
    """An update that would leave fewer root keys than the root threshold."""

    code = "root_unusable"


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


class MalformedAuthorizationError(RollbackError):
    code = "malformed_authorization"


class AlreadyActiveError(UsageError):
    """A rollback to the version that is already active (exit 2)."""

    code = "already_active"


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


class RecordUnauthorizedError(StateSuspectError):
    """A store record that no stored signed manifest backs."""

    code = "record_unauthorized"


class PointerUnauthorizedError(StateSuspectError):
    """An active-version pointer that no authorized, audited move explains."""

    code = "pointer_unauthorized"


# --- operational (exit 3) -----------------------------------------------------------


class LockHeldError(OperationalError):
    code = "lock_held"


class NotInitializedError(OperationalError):
    code = "not_initialized"


class AlreadyInitializedError(OperationalError):
    code = "already_initialized"


class DiskFullError(OperationalError):
    code = "disk_full"


class ReadOnlyError(OperationalError):
    """The file system or the state database is read-only."""

    code = "read_only"


class CancelledError(OperationalError):
    """The operator cancelled (the TUI's cancel); nothing was changed."""

    code = "cancelled"


class InterruptedOperationError(OperationalError):
    """Ctrl-C, SIGTERM or SIGHUP; nothing was changed."""

    code = "interrupted"


class ExecFailedError(OperationalError):
    """``exec`` verified the artifact but could not start the command."""

    code = "exec_failed"


class DemoFailedError(OperationalError):
    """A step of ``appliance demo`` did not behave as expected."""

    code = "demo_failed"


class DemoUnexpectedError(OperationalError):
    """The demo's load returned other bytes than were signed (a bug, never a pass)."""

    code = "demo_unexpected"


class InternalError(OperationalError):
    """A bug: an exception that is not an ``ApplianceError`` reached the CLI."""

    code = "internal_error"


__all__ = [
    "AlreadyActiveError",
    "AlreadyInitializedError",
    "ApplianceError",
    "AuditChainError",
    "AuthorizationExpiredError",
    "AuthorizationMismatchError",
    "AuthorizationReusedError",
    "BundleNotFoundError",
    "CancelledError",
    "DemoFailedError",
    "DemoUnexpectedError",
    "DiskFullError",
    "ExecFailedError",
    "ExitCode",
    "ExpiredError",
    "IOFailedError",
    "InputNotFoundError",
    "InternalError",
    "InterruptedOperationError",
    "KeyExistsError",
    "KeyFileNotFoundError",
    "KeyNotAuthorizedError",
    "LockHeldError",
    "MalformedAuthorizationError",
    "MediaChangedError",
    "MediaError",
    "NameOwnershipError",
    "NotABundleError",
    "NotFoundError",
    "NotInitializedError",
    "ObjectTamperedError",
    "OperationalError",
    "OutputExistsError",
    "PointerUnauthorizedError",
    "PolicyError",
    "ReadOnlyError",
    "RecordUnauthorizedError",
    "RejectedError",
    "ReleaseCounterError",
    "RevokedKeyError",
    "RevokedKeyReuseError",
    "RoleConflictError",
    "RollbackError",
    "RollbackNotAuthorizedError",
    "RootRotationError",
    "RootUnusableError",
    "SequenceOlderError",
    "SequenceReplayError",
    "SourceChangedError",
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
    "all_error_classes",
    "error_class",
    "exit_code_for",
]
