"""Exception roots shared by both sides of the air gap.

Two roots for untrusted input and for I/O, as in python-tuf: ``RejectedError``
(the input is bad; a security decision) and ``OperationalError`` (the
environment failed). Every concrete error carries a stable snake_case ``code``
that scripts read from ``--json`` output. Caller misuse is ``UsageError``.
One class per code: a code is never passed as a string (``ApplianceError``
takes a message only), so the class a caller catches and the code a script
reads cannot disagree. The exit code has one source, the root's ``exit_code``
(``appliance.errors.exit_code_for`` reads it); ``ExitCode`` lives here, on the
lowest floor, so that ``bundles`` needs nothing above it.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """The CLI contract's exit codes (docs/CLI.md)."""

    OK = 0
    REJECTED = 1
    USAGE = 2
    OPERATIONAL = 3
    STATE_SUSPECT = 4


class ApplianceError(Exception):
    """Root of every error the appliance reports to a user."""

    code: str = "error"
    exit_code: ExitCode = ExitCode.OPERATIONAL

    def __init__(self, message: str) -> None:
        super().__init__(message)

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.code


class RejectedError(ApplianceError):
    """Untrusted input failed a check: signature, digest, policy, format (exit 1)."""

    code = "rejected"
    exit_code = ExitCode.REJECTED


class OperationalError(ApplianceError):
    """I/O failed, media gone, disk full, lock held; nothing changed (exit 3)."""

    code = "operational_error"
    exit_code = ExitCode.OPERATIONAL


class UsageError(ApplianceError):
    """The caller asked for something malformed (exit 2)."""

    code = "usage"
    exit_code = ExitCode.USAGE


class NotFoundError(UsageError):
    """An unknown artifact name or version (exit 2)."""

    code = "not_found"


class StateSuspectError(ApplianceError):
    """The appliance's own state is suspect: tampered object, broken chain (exit 4)."""

    code = "state_suspect"
    exit_code = ExitCode.STATE_SUSPECT


# --- signatures and envelopes -------------------------------------------------


class EnvelopeFormatError(RejectedError):
    code = "malformed_envelope"


class PayloadTypeError(RejectedError):
    code = "wrong_payload_type"


class UnsignedError(RejectedError):
    """The envelope carries no signature at all."""

    code = "unsigned"


class UnknownKeyError(RejectedError):
    """No signature was made by a key the verifier knows."""

    code = "unknown_key"


class SignatureError(RejectedError):
    """A signature by a known key does not verify (tampered payload or signature)."""

    code = "bad_signature"


class KeyFormatError(RejectedError):
    code = "bad_key"


# --- manifest -------------------------------------------------------------------


class ManifestFormatError(RejectedError):
    code = "malformed_manifest"


class ManifestTooLargeError(RejectedError):
    code = "manifest_too_large"


class NestingTooDeepError(RejectedError):
    code = "nesting_too_deep"


class TooManyArtifactsError(RejectedError):
    code = "too_many_artifacts"


class PathTooLongError(RejectedError):
    code = "path_too_long"


class UnsafePathError(RejectedError):
    """Absolute path, ``..``, empty or ``.`` segment, backslash."""

    code = "unsafe_path"


class BadNameError(RejectedError):
    """Control characters, not NFC, or outside the allowed alphabet."""

    code = "bad_name"


class DuplicateNameError(RejectedError):
    """Two names or paths equal after NFC and case folding."""

    code = "duplicate_name"


# --- archive and media ----------------------------------------------------------


class ArchiveError(RejectedError):
    code = "archive_corrupt"


class ArchiveLinkError(ArchiveError):
    """Symlink or hardlink member (or a symlink inside a bundle directory)."""

    code = "archive_link"


class ArchiveSpecialFileError(ArchiveError):
    """Device, FIFO, socket or other non-regular member."""

    code = "archive_special_file"


class ArchiveUnsafePathError(ArchiveError):
    code = "archive_unsafe_path"


class ArchiveDuplicateError(ArchiveError):
    """The same member name twice, or two names equal after case folding or NFC."""

    code = "archive_duplicate_member"


class MediaError(OperationalError):
    """The media is absent, unreadable, or vanished mid-read."""

    code = "media_unreadable"


class BundleNotFoundError(MediaError):
    """The bundle path (or a media folder) does not exist."""

    code = "bundle_not_found"


class MediaChangedError(MediaError):
    """A file on media changed, shrank or vanished while it was read (flaky media)."""

    code = "media_changed"


class NotABundleError(UsageError):
    """The path is not a bundle: a media folder, a text file, a device (operator mistake)."""

    code = "not_a_bundle"


# --- local files and I/O (exit 3) -------------------------------------------------


class IOFailedError(OperationalError):
    """A read or write failed (EIO and the like)."""

    code = "io_error"


class InputNotFoundError(OperationalError):
    """A file named on the command line does not exist."""

    code = "file_not_found"


class KeyFileNotFoundError(InputNotFoundError):
    code = "key_not_found"


class OutputExistsError(OperationalError):
    """An output file or folder exists; nothing is ever overwritten."""

    code = "output_exists"


class KeyExistsError(OutputExistsError):
    code = "key_exists"


class SourceChangedError(OperationalError):
    """A file changed while it was being bundled."""

    code = "source_changed"


# --- artifacts ------------------------------------------------------------------


class ArtifactError(RejectedError):
    code = "artifact_rejected"


class DigestMismatchError(ArtifactError):
    code = "digest_mismatch"


class ArtifactTooLongError(ArtifactError):
    """The file on media is longer than the signed size (endless data)."""

    code = "artifact_too_long"


class ArtifactTruncatedError(ArtifactError):
    code = "artifact_truncated"


class ArtifactMissingError(ArtifactError):
    code = "artifact_missing"


class UnlistedFileError(ArtifactError):
    code = "unlisted_file"
