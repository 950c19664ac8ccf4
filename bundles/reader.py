"""Reading a bundle: authenticate the small signed manifest first, then the artifacts.

A ``Bundle`` that exists is authenticated: its constructor reads the manifest
file (size checked before it is read), parses the envelope, verifies the
signatures with the caller's key resolver and only then parses the payload.
Artifacts are read through ``ArtifactReader``, which never returns a byte past
the signed size and refuses media holding more (endless data) or fewer bytes.
Which signers suffice is the caller's policy (the appliance's trust store).
"""

from __future__ import annotations

import os
import re

from bundles.closing import Closing
from bundles.documents import MAX_DOC_BYTES
from bundles.dsse import Envelope, KeyResolver, verify_envelope
from bundles.errors import (
    ArtifactMissingError,
    ArtifactTooLongError,
    ArtifactTruncatedError,
    MediaChangedError,
    NotABundleError,
    PayloadTypeError,
    UnlistedFileError,
)
from bundles.hashing import ArtifactDigests
from bundles.manifest import MAX_MANIFEST_FILE_BYTES as MANIFEST_FILE_CAP
from bundles.manifest import PAYLOAD_TYPE, Artifact, Manifest, Part
from bundles.media import MediaSource, MemberReader, open_media

MANIFEST_FILE = "manifest.dsse.json"
TRUST_DIR = "trust"
_TRUST_FILE = re.compile(r"^trust/[0-9]{4}\.dsse\.json$")
# Base64 grows a payload by 4/3; the rest (type, signatures) fits in 64 KiB.
_ENVELOPE_OVERHEAD = 64 * 1024
# A manifest *file* over its cap (derived from the artifact limit, bundles.manifest) is
# refused before it is read.
MAX_MANIFEST_FILE_BYTES = MANIFEST_FILE_CAP
MAX_TRUST_FILE_BYTES = (MAX_DOC_BYTES + 2) // 3 * 4 + _ENVELOPE_OVERHEAD
READ_CHUNK = 1 << 20


def _read_envelope(source: MediaSource) -> Envelope:
    data = source.read_bytes(MANIFEST_FILE, MAX_MANIFEST_FILE_BYTES, "manifest")
    return Envelope.from_bytes(data, max_bytes=MAX_MANIFEST_FILE_BYTES)


class ArtifactReader(Closing):
    """One artifact's bytes, across its parts in order, bounded to the signed size.

    Sizes are checked when it is made (``open_artifact`` raises) and again
    while reading, since media can change: a part holding more than its signed
    size raises ``ArtifactTooLongError``, fewer ``ArtifactTruncatedError``.
    """

    def __init__(self, source: MediaSource, artifact: Artifact) -> None:
        self.artifact = artifact
        self.size = artifact.size
        self.bytes_read = 0
        self._parts: tuple[Part, ...] = artifact.files
        self._members: list[MemberReader] = []
        self._index = 0
        try:
            for part in self._parts:
                self._members.append(source.open(part.path))
            self.check_sizes()
        except BaseException:
            self.close()
            raise

    def _check(self, part: Part, member: MemberReader) -> None:
        have = member.size
        if have > part.size:
            raise ArtifactTooLongError(
                f"{self.artifact.ref}: {part.path!r} holds {have} bytes, signed {part.size}"
            )
        if have < part.size:
            raise ArtifactTruncatedError(
                f"{self.artifact.ref}: {part.path!r} holds {have} bytes, signed {part.size}"
            )

    def check_sizes(self) -> None:
        """Every part's size on media equals its signed size, right now."""
        for part, member in zip(self._parts, self._members, strict=True):
            self._check(part, member)

    def readinto(self, buf: memoryview | bytearray) -> int:
        """Read up to ``len(buf)`` bytes; 0 at the signed end."""
        view = memoryview(buf).cast("B")
        while self._index < len(self._parts):
            part, member = self._parts[self._index], self._members[self._index]
            left = part.size - member.pos
            if left == 0:
                self._check(part, member)  # endless data: did it grow since?
                self._index += 1
                continue
            if len(view) == 0:
                return 0
            got = member.readinto(view[: min(len(view), left)])
            if got == 0:  # its size was right when opened: it shrank while read
                raise MediaChangedError(
                    f"{self.artifact.ref}: {part.path!r} shrank while read: it ended after "
                    f"{member.pos} bytes, signed {part.size}; nothing was changed"
                )
            self.bytes_read += got
            return got
        return 0

    def segments(self) -> list[tuple[int, int, int]]:
        """``(fd, offset, length)`` per part for a kernel copy; sizes are checked first.

        Call ``check_sizes`` again after copying: the media may change meanwhile.
        """
        self.check_sizes()
        return [(m.fd, m.offset, p.size) for p, m in zip(self._parts, self._members, strict=True)]

    def close(self) -> None:
        for member in self._members:
            member.close()
        self._members = []


class Bundle(Closing):
    """An authenticated bundle on media (the constructor verifies the signatures)."""

    def __init__(self, source: MediaSource, resolver: KeyResolver) -> None:
        self.source = source
        self.envelope = _read_envelope(source)
        self.signers = verify_envelope(self.envelope, resolver, PAYLOAD_TYPE)
        self.manifest = Manifest.from_payload(self.envelope.payload)

    def check_files(self) -> None:
        """Every listed file present; nothing else but the manifest and trust updates."""
        on_media = self.source.files()
        listed: set[str] = set()
        for artifact in self.manifest.artifacts:
            for part in artifact.files:
                listed.add(part.path)
                if part.path not in on_media:
                    raise ArtifactMissingError(
                        f"{artifact.ref}: {part.path!r} is missing from {self.source.location}"
                    )
        for path in sorted(on_media):
            if path in listed or path == MANIFEST_FILE or _TRUST_FILE.match(path):
                continue
            raise UnlistedFileError(f"{path!r} in {self.source.location} is not in the manifest")

    def open_artifact(self, artifact: Artifact) -> ArtifactReader:
        if self.manifest.artifact(artifact.name) != artifact:
            raise ValueError(f"{artifact.ref} is not an artifact of this bundle")
        return ArtifactReader(self.source, artifact)

    def close(self) -> None:
        self.source.close()


def open_bundle_media(path: str | os.PathLike[str]) -> MediaSource:
    """``open_media`` for a bundle: a folder without a manifest is refused before it is walked.

    Someone who points at a mount point instead of the bundle in it gets a clear
    refusal at once, not a walk of the whole disk.
    """
    location = os.fspath(path)
    if os.path.isdir(location) and not os.path.lexists(os.path.join(location, MANIFEST_FILE)):
        raise NotABundleError(
            f"{location} holds no {MANIFEST_FILE}: not a bundle directory (give the bundle's "
            "folder, not the media's; 'appliance media' lists the bundles on media)"
        )
    return open_media(location)


def open_bundle(path: str | os.PathLike[str], resolver: KeyResolver) -> Bundle:
    """Open media and authenticate its manifest; the media is closed on refusal."""
    source = open_bundle_media(path)
    ok = False
    try:
        bundle = Bundle(source, resolver)
        ok = True
    finally:
        if not ok:
            source.close()
    return bundle


def _trust_update_bytes(source: MediaSource) -> list[bytes]:
    names = sorted(p for p in source.files() if _TRUST_FILE.match(p))
    return [source.read_bytes(name, MAX_TRUST_FILE_BYTES, "trust update") for name in names]


def read_trust_updates(source: MediaSource) -> list[Envelope]:
    """``trust/NNNN.dsse.json`` in name order, parsed but NOT verified."""
    return [
        Envelope.from_bytes(data, max_bytes=MAX_TRUST_FILE_BYTES)
        for data in _trust_update_bytes(source)
    ]


def signed_documents(source: MediaSource) -> list[bytes]:
    """The bytes of the manifest envelope, then of each trust update in name order, as
    read (once per source: ``MediaSource.read_bytes``), not parsed."""
    manifest = source.read_bytes(MANIFEST_FILE, MAX_MANIFEST_FILE_BYTES, "manifest")
    return [manifest, *_trust_update_bytes(source)]


def peek(source: MediaSource) -> tuple[Envelope, Manifest]:
    """UNVERIFIED: the envelope and manifest as claimed. Say so wherever it is shown."""
    envelope = _read_envelope(source)
    if envelope.payload_type != PAYLOAD_TYPE:
        raise PayloadTypeError(f"payload type {envelope.payload_type!r}, expected {PAYLOAD_TYPE!r}")
    return envelope, Manifest.from_payload(envelope.payload)


def verify_artifacts(bundle: Bundle) -> None:
    """Read every artifact once, BLAKE3 (and SHA-256 if signed) it, compare with the manifest."""
    buf = bytearray(READ_CHUNK)
    view = memoryview(buf)
    for artifact in bundle.manifest.artifacts:
        digests = ArtifactDigests(artifact)  # the verifier import staging uses too
        with bundle.open_artifact(artifact) as reader:
            while n := reader.readinto(view):
                digests.update(view[:n])
        digests.check()
