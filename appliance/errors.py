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

    def __init__(self, message: str, *, seq: int | None = None) -> None:
        super().__init__(message)
        self.seq = seq  # the first event the chain no longer vouches for


class StateRolledBackError(StateSuspectError):
    code = "state_rolled_back"


class WitnessMissingError(StateSuspectError):
    code = "witness_missing"


class StoreCorruptError(StateSuspectError):
    code = "store_corrupt"


class SchemaTamperedError(StateSuspectError):
    """The state database holds a trigger, view, table or index the appliance never
    creates, or one of its own redefined: refused before any write (a trigger would run
    inside the appliance's own transactions) and by every command that decides on trust."""

    code = "schema_tampered"


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


# --- issues 13 and 14 (lead): trust anchor, signed evidence, forensics ---------------


class TrustStateUnauthorizedError(StateSuspectError):
    """A trust, counter or time table that disagrees with the anchor and signed documents
    (also a watcher's alarm: trust tables changed without a signed, audited update)."""

    code = "trust_state_unauthorized"


# --- issue 12: watching the store (alarms, exit 4) and acknowledging them ----------


class ObjectModifiedError(StateSuspectError):
    """A store object written, truncated, chmodded, or its bytes no longer hash right."""

    code = "object_modified"


class ObjectRemovedError(StateSuspectError):
    """A referenced store object deleted or renamed away."""

    code = "object_removed"


class ObjectReplacedError(StateSuspectError):
    """A referenced store object replaced (renamed over) by other bytes."""

    code = "object_replaced"


class UnknownObjectError(StateSuspectError):
    """A file in ``objects/`` that no record references and no import is promoting."""

    code = "unknown_object"


class WitnessChangedError(StateSuspectError):
    """The witness vanished, went backwards, or no longer matches the home."""

    code = "witness_changed"


# --- issues 13 and 14 (lead), continued ---------------------------------------------


class AnchorMissingError(StateSuspectError):
    code = "anchor_missing"


class AnchorInvalidError(StateSuspectError):
    """An anchor that is malformed, not a regular file, or writable by others."""

    code = "anchor_invalid"


class AnchorMismatchError(StateSuspectError):
    """The anchor belongs to another home (or to the original of a copied home)."""

    code = "anchor_mismatch"


class WitnessForeignError(StateSuspectError):
    """The witness records another home: a copy must never advance the original's witness."""

    code = "witness_foreign"


class ReadOnlyModeError(UsageError):
    """A command that would write, asked for under ``--read-only``."""

    code = "read_only_mode"


# --- issue 13: a home that a store writer cannot turn against its owner (exit 4) ------


class HomeTamperedError(StateSuspectError):
    """A fixed part of the home (``appliance.db`` and its journals, ``lock``, ``objects/``,
    ``objects/xx/``, ``staging/``) is a link or of the wrong type: nothing is used."""

    code = "home_tampered"


class WitnessUnreadableError(StateSuspectError):
    """The witness path holds a link, FIFO, directory, device or socket, not a file."""

    code = "witness_unreadable"


# --- issue 11: the loader service -------------------------------------------------


class LoaderNotAuthorizedError(PolicyError):
    """No root-signed grant lets this loader (user or systemd unit) load this artifact."""

    code = "loader_not_authorized"


class DigestPinnedError(PolicyError):
    """The request pinned a BLAKE3 digest and the artifact has another one."""

    code = "digest_pinned"


class BadRequestError(UsageError):
    """A service request that is not one well-formed JSON request line."""

    code = "bad_request"


class RequestTooLargeError(UsageError):
    code = "request_too_large"


class StdoutIsTerminalError(UsageError):
    """``load`` without ``-o`` would write artifact bytes to a terminal."""

    code = "stdout_is_terminal"


class ServiceUnavailableError(OperationalError):
    """No loader service answers on the socket (absent, refused, closed early)."""

    code = "service_unavailable"


class ServiceProtocolError(OperationalError):
    """The service's reply is not a well-formed protocol reply."""

    code = "service_protocol_error"


class ServiceBusyError(OperationalError):
    code = "service_busy"


class ServiceStoppingError(OperationalError):
    code = "service_stopping"


class RequestTimeoutError(OperationalError):
    code = "request_timeout"


class SocketInUseError(OperationalError):
    code = "socket_in_use"


class UnknownUserError(UsageError):
    code = "unknown_user"


class CounterUnauthorizedError(StateSuspectError):
    """A high-water mark, trust version or other counter changed with no audited change."""

    code = "counter_unauthorized"


class StateUnauthorizedError(StateSuspectError):
    """The state database changed (schema, unknown table) with no audited transaction."""

    code = "state_unauthorized"


class AlarmNotFoundError(NotFoundError):
    code = "alarm_not_found"


class AlarmAlreadyAcknowledgedError(UsageError):
    code = "alarm_already_acknowledged"


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


# --- operational codes that had no class of their own (merge of issues 11, 13, 16) ----


class AnchorExistsError(OperationalError):
    """``init`` would overwrite the trust anchor of a home that may still exist."""

    code = "anchor_exists"


class PermissionDeniedError(OperationalError):
    """The home is closed to this user (loaders use the loader service)."""

    code = "permission_denied"


class BadActivationError(OperationalError):
    """A socket handed over by systemd (``LISTEN_FDS``) is not a Unix stream socket."""

    code = "bad_activation"


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
    "AlarmAlreadyAcknowledgedError",
    "AlarmNotFoundError",
    "AlreadyActiveError",
    "AlreadyInitializedError",
    "AnchorExistsError",
    "AnchorInvalidError",
    "AnchorMismatchError",
    "AnchorMissingError",
    "ApplianceError",
    "AuditChainError",
    "AuthorizationExpiredError",
    "AuthorizationMismatchError",
    "AuthorizationReusedError",
    "BadActivationError",
    "BadRequestError",
    "BundleNotFoundError",
    "CancelledError",
    "CounterUnauthorizedError",
    "DemoFailedError",
    "DemoUnexpectedError",
    "DigestPinnedError",
    "DiskFullError",
    "ExecFailedError",
    "ExitCode",
    "ExpiredError",
    "HomeTamperedError",
    "IOFailedError",
    "InputNotFoundError",
    "InternalError",
    "InterruptedOperationError",
    "KeyExistsError",
    "KeyFileNotFoundError",
    "KeyNotAuthorizedError",
    "LoaderNotAuthorizedError",
    "LockHeldError",
    "MalformedAuthorizationError",
    "MediaChangedError",
    "MediaError",
    "ModelSignatureError",
    "ModelSignatureInvalidError",
    "ModelSignatureMismatchError",
    "ModelSignatureMissingError",
    "NameOwnershipError",
    "NotABundleError",
    "NotFoundError",
    "NotInitializedError",
    "ObjectModifiedError",
    "ObjectRemovedError",
    "ObjectReplacedError",
    "ObjectTamperedError",
    "OperationalError",
    "OutputExistsError",
    "PermissionDeniedError",
    "PointerUnauthorizedError",
    "PolicyError",
    "ReadOnlyError",
    "ReadOnlyModeError",
    "RecordUnauthorizedError",
    "RejectedError",
    "ReleaseCounterError",
    "RequestTimeoutError",
    "RequestTooLargeError",
    "RevokedKeyError",
    "RevokedKeyReuseError",
    "RoleConflictError",
    "RollbackError",
    "RollbackNotAuthorizedError",
    "RootRotationError",
    "RootUnusableError",
    "SequenceOlderError",
    "SequenceReplayError",
    "ServiceBusyError",
    "ServiceProtocolError",
    "ServiceStoppingError",
    "ServiceUnavailableError",
    "SocketInUseError",
    "SourceChangedError",
    "StateRolledBackError",
    "StateSuspectError",
    "StateUnauthorizedError",
    "StdoutIsTerminalError",
    "StoreCorruptError",
    "ThresholdError",
    "TrustStateUnauthorizedError",
    "TrustUpdateError",
    "TrustUpdateReplayError",
    "TrustUpdateUnauthorizedError",
    "TrustUpdateVersionError",
    "UnknownObjectError",
    "UnknownUserError",
    "UsageError",
    "VersionConflictError",
    "WitnessChangedError",
    "WitnessForeignError",
    "WitnessMissingError",
    "WitnessUnreadableError",
    "WrongSiteError",
    "all_error_classes",
    "error_class",
    "exit_code_for",
]
