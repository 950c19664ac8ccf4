"""The bundle manifest: an in-toto Statement v1 with our predicate.

Each artifact is a subject ``{"name": NAME, "digest": {"blake3": HEX}}`` and an
entry in the predicate's ``artifacts`` list. ``Manifest.from_payload`` applies
the limits on raw bytes before parsing, then validates strictly: unknown keys,
wrong types, out-of-range numbers, unsafe paths and colliding names are all
refused with their own error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bundles.canonical import canonical_bytes, parse_json
from bundles.errors import TooManyArtifactsError
from bundles.fields import as_hex, as_int, as_str, as_time, fail, require_object
from bundles.names import (
    check_artifact_name,
    check_identifier,
    check_relative_path,
    check_unique,
)
from bundles.timeutil import format_time

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://appliance.dev/transfer-bundle/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
MAX_ARTIFACTS = 100_000
# The caps follow from the artifact limit, so that the largest bundle the format allows
# fits: one artifact's subject (BLAKE3 and SHA-256) and predicate entry with a name of
# the longest 128 characters, stored as artifacts/NAME/VERSION/NAME, take under 1 KiB
# (a typical one with 40-character names about 330 bytes); 1 KiB per artifact, plus
# 1 MiB for the rest. The envelope on media holds the payload in base64.
MANIFEST_BYTES_PER_ARTIFACT = 1024
MAX_MANIFEST_BYTES = MAX_ARTIFACTS * MANIFEST_BYTES_PER_ARTIFACT + (1 << 20)
_ENVELOPE_OVERHEAD = 64 * 1024  # payload type and up to 64 signatures
MAX_MANIFEST_FILE_BYTES = (MAX_MANIFEST_BYTES + 2) // 3 * 4 + _ENVELOPE_OVERHEAD
ARTIFACT_PREFIX = "artifacts/"
_MEDIA_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*$")


@dataclass(frozen=True)
class Part:
    path: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size}


@dataclass(frozen=True)
class Artifact:
    name: str
    version: str
    release: int
    size: int
    media_type: str
    path: str
    blake3: str
    sha256: str | None = None
    parts: tuple[Part, ...] = ()

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def files(self) -> tuple[Part, ...]:
        """The files on media that hold this artifact, in order."""
        return self.parts if self.parts else (Part(self.path, self.size),)

    def to_entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "release": self.release,
            "size": self.size,
            "media_type": self.media_type,
            "path": self.path,
        }
        if self.parts:
            entry["parts"] = [p.to_dict() for p in self.parts]
        return entry

    def to_subject(self) -> dict[str, Any]:
        digest = {"blake3": self.blake3}
        if self.sha256:
            digest["sha256"] = self.sha256
        return {"name": self.name, "digest": digest}


@dataclass(frozen=True)
class Manifest:
    stream: str
    sequence: int
    issued_at: datetime
    expires: datetime
    artifacts: tuple[Artifact, ...]
    sites: tuple[str, ...] = ()
    any_site: bool = False
    _by_name: dict[str, Artifact] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.any_site == bool(self.sites):
            raise fail("a manifest names its sites or says any_site, exactly one of them")
        object.__setattr__(self, "_by_name", {a.name: a for a in self.artifacts})

    def artifact(self, name: str) -> Artifact | None:
        return self._by_name.get(name)

    def allows_site(self, site: str | None) -> bool:
        return self.any_site or (site is not None and site in self.sites)

    # --- serialization -----------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "_type": STATEMENT_TYPE,
            "subject": [a.to_subject() for a in self.artifacts],
            "predicateType": PREDICATE_TYPE,
            "predicate": {
                "stream": self.stream,
                "sequence": self.sequence,
                "issued_at": format_time(self.issued_at),
                "expires": format_time(self.expires),
                "sites": list(self.sites),
                "any_site": self.any_site,
                "artifacts": [a.to_entry() for a in self.artifacts],
            },
        }

    def to_payload(self) -> bytes:
        return canonical_bytes(self.to_dict())

    @classmethod
    def from_payload(cls, payload: bytes) -> Manifest:
        """Limits on bytes first (size, nesting), then parse and validate."""
        return cls.from_dict(parse_json(payload, what="manifest", max_bytes=MAX_MANIFEST_BYTES))

    @classmethod
    def from_dict(cls, doc: Any) -> Manifest:
        doc = require_object(doc, "statement", {"_type", "subject", "predicateType", "predicate"})
        if doc["_type"] != STATEMENT_TYPE:
            raise fail(f"_type must be {STATEMENT_TYPE}")
        if doc["predicateType"] != PREDICATE_TYPE:
            raise fail(f"predicateType must be {PREDICATE_TYPE}")
        pred = require_object(
            doc["predicate"],
            "predicate",
            {"stream", "sequence", "issued_at", "expires", "sites", "any_site", "artifacts"},
        )
        subjects, entries = doc["subject"], pred["artifacts"]
        if not isinstance(subjects, list) or not isinstance(entries, list):
            raise fail("subject and predicate.artifacts must be lists")
        if len(subjects) > MAX_ARTIFACTS or len(entries) > MAX_ARTIFACTS:
            raise TooManyArtifactsError(f"more than {MAX_ARTIFACTS} artifacts")
        if not entries:
            raise fail("a bundle must carry at least one artifact")
        if len(subjects) != len(entries):
            raise fail("subject and predicate.artifacts differ in length")

        digests: dict[str, dict[str, Any]] = {}
        for i, s in enumerate(subjects):
            s = require_object(s, f"subject[{i}]", {"name", "digest"})
            name = check_artifact_name(s["name"])
            if name in digests:
                raise fail(f"subject {name!r} appears twice")
            digests[name] = require_object(
                s["digest"], f"subject[{i}].digest", {"blake3"}, frozenset({"sha256"})
            )

        artifacts = [cls._artifact(i, e, digests) for i, e in enumerate(entries)]
        check_unique((a.name for a in artifacts), "artifact name")
        paths = [a.path for a in artifacts] + [p.path for a in artifacts for p in a.parts]
        check_unique(paths, "bundle path")

        sites = pred["sites"]
        if not isinstance(sites, list) or not isinstance(pred["any_site"], bool):
            raise fail("sites must be a list and any_site a boolean")
        site_ids = tuple(check_identifier(s, "site") for s in sites)
        check_unique(site_ids, "site")
        issued, expires = (
            as_time(pred["issued_at"], "issued_at"),
            as_time(pred["expires"], "expires"),
        )
        if expires <= issued:
            raise fail("expires must be after issued_at")
        return cls(
            stream=check_identifier(pred["stream"], "stream"),
            sequence=as_int(pred["sequence"], "sequence", 1),
            issued_at=issued,
            expires=expires,
            artifacts=tuple(artifacts),
            sites=site_ids,
            any_site=pred["any_site"],
        )

    @staticmethod
    def _artifact(i: int, e: Any, digests: dict[str, dict[str, Any]]) -> Artifact:
        what = f"artifacts[{i}]"
        e = require_object(
            e,
            what,
            {"name", "version", "release", "size", "media_type", "path"},
            frozenset({"parts"}),
        )
        name = check_artifact_name(e["name"])
        if name not in digests:
            raise fail(f"artifact {name!r} has no subject digest")
        path = check_relative_path(e["path"], f"{what}.path")
        size = as_int(e["size"], f"{what}.size")
        media_type = as_str(e["media_type"], f"{what}.media_type", 255)
        if not _MEDIA_TYPE.match(media_type):
            raise fail(f"{what}.media_type {media_type!r} is not type/subtype")
        parts: tuple[Part, ...] = ()
        if "parts" in e:
            raw = e["parts"]
            if not isinstance(raw, list) or not raw or len(raw) > MAX_ARTIFACTS:
                raise fail(f"{what}.parts must be a non-empty list")
            parts = tuple(
                Part(
                    check_relative_path(
                        require_object(p, f"{what}.parts[{j}]", {"path", "size"})["path"],
                        f"{what}.parts[{j}].path",
                    ),
                    as_int(p["size"], f"{what}.parts[{j}].size"),
                )
                for j, p in enumerate(raw)
            )
            if sum(p.size for p in parts) != size:
                raise fail(f"{what}: part sizes do not add up to the artifact size")
        for f in (Part(path, size), *parts):
            if not f.path.startswith(ARTIFACT_PREFIX):
                raise fail(f"{what}: path {f.path!r} must be under {ARTIFACT_PREFIX}")
        digest = digests[name]
        return Artifact(
            name=name,
            version=check_identifier(e["version"], f"{what}.version"),
            release=as_int(e["release"], f"{what}.release", 1),
            size=size,
            media_type=media_type,
            path=path,
            blake3=as_hex(digest["blake3"], f"{name} blake3 digest"),
            sha256=as_hex(digest["sha256"], f"{name} sha256 digest")
            if "sha256" in digest
            else None,
            parts=parts,
        )
