"""Property tests: for ANY input bytes only ``ApplianceError`` subclasses escape.

Covers ``Manifest.from_payload``, ``Envelope.from_bytes``, the tar reader
(``open_media`` on random bytes and on mutated valid tars) and the whole reading
pipeline on mutated bundles. Bounded: about 200 examples each, no deadline.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conformance.driver import Built, make_bundle
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bundles.dsse import Envelope
from bundles.errors import ApplianceError
from bundles.manifest import Manifest
from bundles.media import open_media
from bundles.reader import MANIFEST_FILE, open_bundle, peek, read_trust_updates, verify_artifacts

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def built() -> Iterator[tuple[Built, Built]]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        d = make_bundle(root / "d", part_size=1000, sha256=True, sites=("s1", "s2"))
        t = make_bundle(root / "t", tar=True, part_size=1000, keys=d.keys)
        yield d, t


def _mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    """Apply (kind, position, value) edits: 0 flip a byte, 1 insert, 2 delete, 3 truncate."""
    buf = bytearray(data)
    for kind, pos, value in edits:
        if not buf:
            break
        i = pos % len(buf)
        if kind == 0:
            buf[i] ^= value or 1
        elif kind == 1:
            buf.insert(i, value)
        elif kind == 2:
            del buf[i]
        else:
            del buf[i:]
    return bytes(buf)


edits = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 2**31), st.integers(0, 255)), min_size=1, max_size=8
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**60), 2**60)
    | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=30,
)


def _only_ours(fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except ApplianceError:
        pass


# --- manifest ----------------------------------------------------------------------


@SETTINGS
@given(st.binary(max_size=4096))
def test_manifest_random_bytes(data: bytes) -> None:
    _only_ours(Manifest.from_payload, data)


@SETTINGS
@given(edits)
def test_manifest_mutated_payload(built: tuple[Built, Built], e: Any) -> None:
    payload = built[0].manifest.to_payload()
    _only_ours(Manifest.from_payload, _mutate(payload, e))


@SETTINGS
@given(json_values)
def test_manifest_random_json(value: Any) -> None:
    _only_ours(Manifest.from_dict, value)


@SETTINGS
@given(st.data())
def test_manifest_one_field_replaced(built: tuple[Built, Built], data: Any) -> None:
    doc = json.loads(built[0].manifest.to_payload())
    target: Any = doc
    for _ in range(data.draw(st.integers(1, 6))):
        if isinstance(target, dict) and target:
            key = data.draw(st.sampled_from(sorted(target)))
        elif isinstance(target, list) and target:
            key = data.draw(st.integers(0, len(target) - 1))
        else:
            break
        if not isinstance(target[key], dict | list) or data.draw(st.booleans()):
            target[key] = data.draw(json_values)
            break
        target = target[key]
    _only_ours(Manifest.from_payload, json.dumps(doc).encode())


# --- envelope ----------------------------------------------------------------------


@SETTINGS
@given(st.binary(max_size=4096))
def test_envelope_random_bytes(data: bytes) -> None:
    _only_ours(Envelope.from_bytes, data)


@SETTINGS
@given(edits)
def test_envelope_mutated(built: tuple[Built, Built], e: Any) -> None:
    raw = (built[0].path / MANIFEST_FILE).read_bytes()
    _only_ours(Envelope.from_bytes, _mutate(raw, e))


@SETTINGS
@given(json_values)
def test_envelope_random_json(value: Any) -> None:
    _only_ours(Envelope.from_dict, value)


# --- tar reader and the whole pipeline -------------------------------------------------


def _read_everything(path: Path, built: Built) -> None:
    with open_media(path) as src:
        for name in list(src.files())[:50]:
            with src.open(name) as m:
                buf = bytearray(4096)
                while m.readinto(buf):
                    pass
        peek(src)
        read_trust_updates(src)
    with open_bundle(path, built.resolver()) as bundle:
        bundle.check_files()
        verify_artifacts(bundle)


@SETTINGS
@given(st.binary(max_size=8192))
def test_tar_random_bytes(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "r.tar"
        p.write_bytes(data)
        _only_ours(lambda: open_media(p).close())


@SETTINGS
@given(st.binary(min_size=512, max_size=512), st.integers(0, 40))
def test_tar_random_header_in_valid_tar(
    built: tuple[Built, Built], header: bytes, block: int
) -> None:
    raw = bytearray(built[1].path.read_bytes())
    at = (block * 512) % len(raw)
    raw[at : at + 512] = header
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "m.tar"
        p.write_bytes(bytes(raw))
        _only_ours(_read_everything, p, built[1])


@SETTINGS
@given(edits)
def test_tar_mutated_bundle(built: tuple[Built, Built], e: Any) -> None:
    raw = built[1].path.read_bytes()
    # most edits land in the headers and manifest: the interesting part
    head = _mutate(raw[:16384], e)
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "m.tar"
        p.write_bytes(head + raw[16384:])
        _only_ours(_read_everything, p, built[1])


@SETTINGS
@given(edits, st.integers(0, 20))
def test_directory_bundle_mutated_files(built: tuple[Built, Built], e: Any, which: int) -> None:
    import shutil

    src = built[0].path
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "b"
        shutil.copytree(src, copy)
        files = sorted(p for p in copy.rglob("*") if p.is_file())
        victim = files[which % len(files)]
        victim.write_bytes(_mutate(victim.read_bytes(), e))
        _only_ours(_read_everything, copy, built[0])
