"""The limits admit what they promise: a bundle of the most artifacts the format allows.

Kept cheap in the default run (the manifest is built and measured in memory; its size
is linear in the entries, so two real serializations give it exactly); the full-size
import of 100,000 artifacts is in the bench (``bench/scale.py --counts 100000``).
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from bundles.dsse import Envelope, Signature
from bundles.errors import ManifestTooLargeError, TooManyArtifactsError
from bundles.manifest import (
    MAX_ARTIFACTS,
    MAX_MANIFEST_BYTES,
    MAX_MANIFEST_FILE_BYTES,
    Artifact,
    Manifest,
)
from bundles.media import MAX_ENTRIES
from bundles.names import MAX_NAME_CHARS
from bundles.reader import MAX_MANIFEST_FILE_BYTES as READER_CAP
from bundles.timeutil import utcnow
from bundles.writer import ArtifactSpec, _layout


def _longest(i: int) -> Artifact:
    """An artifact with every field at its longest usual value (128-character name and
    file name, 32-character version, a size of 2^53-1, both digests, a long media type)."""
    name = f"{i:06d}-" + "n" * (MAX_NAME_CHARS - 7)
    version = "v" * 32
    spec = ArtifactSpec(name, version, Path(name))
    path, _ = _layout(spec, 1, None)
    return Artifact(
        name,
        version,
        2**53 - 1,
        2**53 - 1,
        "application/vnd.example.model-weights+binary",
        path,
        "ab" * 32,
        "cd" * 32,
    )


def _manifest(n: int) -> Manifest:
    now = utcnow()
    arts = tuple(_longest(i) for i in range(n))
    return Manifest("models", 1, now, now + timedelta(days=30), arts, ("site-a",))


def test_the_largest_manifest_fits_its_caps() -> None:
    a, b = (len(_manifest(n).to_payload()) for n in (200, 400))
    per, base = (b - a) / 200, a - 200 * (b - a) / 200
    largest = base + per * MAX_ARTIFACTS
    assert per <= 1024, per
    assert largest <= MAX_MANIFEST_BYTES, (largest, MAX_MANIFEST_BYTES)
    # its envelope, base64 and 64 signatures, fits the file cap the reader applies
    sigs = tuple(Signature("k" * 64, b"s" * 64) for _ in range(64))
    small = len(Envelope("application/vnd.in-toto+json", b"x" * 3000, sigs).to_bytes())
    envelope = small - 4000 + largest * 4 / 3 + 4
    assert READER_CAP == MAX_MANIFEST_FILE_BYTES
    assert envelope <= MAX_MANIFEST_FILE_BYTES, (envelope, MAX_MANIFEST_FILE_BYTES)


def test_a_manifest_at_the_caps_parses() -> None:
    """A real manifest of longest entries, padded to just under the byte cap, parses."""
    m = _manifest(300)
    payload = m.to_payload()
    assert len(Manifest.from_payload(payload).artifacts) == 300
    padded = payload[:-1] + b" " * (MAX_MANIFEST_BYTES - len(payload)) + payload[-1:]
    assert len(padded) == MAX_MANIFEST_BYTES
    assert len(Manifest.from_payload(padded).artifacts) == 300
    with pytest.raises(ManifestTooLargeError):
        Manifest.from_payload(padded + b" ")


def _count_doc(n: int) -> bytes:
    doc = _manifest(1).to_dict()
    doc["subject"] = [0] * n  # the count is checked before any entry is looked at
    doc["predicate"]["artifacts"] = [0] * n
    return json.dumps(doc).encode()


def test_one_artifact_over_the_limit_is_refused() -> None:
    with pytest.raises(TooManyArtifactsError):
        Manifest.from_payload(_count_doc(MAX_ARTIFACTS + 1))


def test_a_directory_bundle_of_the_most_artifacts_is_within_the_entry_limit() -> None:
    """Every file and directory the writer lays out for 100,000 artifacts (one part each,
    the usual case), plus the top level and a trust folder of 100 updates."""
    entries: set[str] = set()
    for i in range(MAX_ARTIFACTS):
        spec = ArtifactSpec(f"model-{i}", "1.0", Path(f"model-{i}.bin"))
        path, parts = _layout(spec, 1, None)
        for f in (path, *(p.path for p in parts)):
            segs = f.split("/")
            entries.update("/".join(segs[: k + 1]) for k in range(len(segs)))
    total = len(entries) + 1 + 1 + 100  # manifest, trust/, trust updates
    assert total <= MAX_ENTRIES, (total, MAX_ENTRIES)
