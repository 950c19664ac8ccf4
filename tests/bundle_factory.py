"""Build signed bundles in tests, with knobs to change one thing at a time.

Typical use (pytest puts ``tests/`` on ``sys.path``: the first folder up from a
test file without an ``__init__.py``, so this works from ``tests/*/`` too)::

    from bundle_factory import make_bundle, resolver_for
    b = make_bundle(tmp_path, sequence=7, sites=("site-a",))
    bundle = open_bundle(b.path, resolver_for(*b.keys))

``make_bundle`` goes through the real writer (``bundles.writer.create_bundle``).
For attacks the writer refuses to produce, use the raw helpers: ``sign_payload``
and ``write_manifest`` (any payload bytes, signed or not), ``resign`` (edit the
manifest's JSON and sign again), ``tamper_payload``/``tamper_signature``,
``flip_bit``, and ``pack_tar``/``tar_member`` to build hostile tars.
"""

from __future__ import annotations

import base64
import io
import json
import os
import tarfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bundles.canonical import canonical_bytes
from bundles.dsse import Envelope, KeyResolver, Signature, sign_envelope
from bundles.keys import PrivateKey, PublicKey
from bundles.manifest import PAYLOAD_TYPE, Manifest
from bundles.reader import MANIFEST_FILE
from bundles.timeutil import utcnow
from bundles.writer import ArtifactSpec, create_bundle

DEFAULT_ARTIFACTS: dict[str, bytes] = {
    "model@1.0": b"weights " * 300,  # 2,400 bytes: several parts at part_size=1000
    "tokenizer@1.0": b'{"vocab": ["a", "b"]}\n',
}


def make_key() -> PrivateKey:
    return PrivateKey.generate()


def resolver_for(*keys: PrivateKey | PublicKey) -> KeyResolver:
    """A resolver that knows exactly these keys."""
    table = {k.keyid: (k.public if isinstance(k, PrivateKey) else k) for k in keys}
    return table.get


@dataclass
class BuiltBundle:
    path: Path  # the bundle directory, or the tar file
    manifest: Manifest
    keys: list[PrivateKey]  # every key that signed
    contents: dict[str, bytes]  # artifact name -> its bytes
    sources: Path  # where the source files were written
    tar: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> PrivateKey:
        return self.keys[0]

    def resolver(self) -> KeyResolver:
        return resolver_for(*self.keys)

    def file(self, name: str, part: int | None = None) -> Path:
        """The media file of an artifact (directory bundles only)."""
        art = self.manifest.artifact(name)
        assert art is not None, name
        rel = art.files[part].path if part is not None else art.files[0].path
        return self.path / rel


def make_bundle(
    tmp_path: Path,
    *,
    name: str = "bundle",
    artifacts: Mapping[str, bytes] | None = None,
    stream: str = "main",
    sequence: int = 1,
    expires: datetime | None = None,
    issued_at: datetime | None = None,
    sites: Sequence[str] = (),
    any_site: bool | None = None,
    keys: Sequence[PrivateKey] | None = None,
    extra_keys: Sequence[PrivateKey] = (),
    trust_updates: Sequence[bytes] = (),
    tar: bool = False,
    part_size: int | None = None,
    sha256: bool = False,
    releases: Mapping[str, int] | None = None,
    media_types: Mapping[str, str] | None = None,
) -> BuiltBundle:
    """A valid signed bundle under ``tmp_path``; every knob changes one thing.

    ``artifacts`` maps ``NAME@VERSION`` to bytes. ``any_site`` defaults to True
    unless ``sites`` are given. An ``expires`` in the past makes an expired
    bundle (issued a day before it expired). ``keys`` sign (default: one new
    key); ``extra_keys`` sign too (duplicate keys give duplicate signatures).
    """
    artifacts = DEFAULT_ARTIFACTS if artifacts is None else artifacts
    signing = list(keys) if keys is not None else [make_key()]
    signing += list(extra_keys)
    now = utcnow()
    expires = expires or now + timedelta(days=30)
    if issued_at is None and expires <= now:
        issued_at = expires - timedelta(days=1)
    if any_site is None:
        any_site = not sites
    src_dir = tmp_path / f"{name}.src"
    src_dir.mkdir(parents=True, exist_ok=True)
    specs: list[ArtifactSpec] = []
    contents: dict[str, bytes] = {}
    for ref, data in artifacts.items():
        art_name, _, version = ref.partition("@")
        src = src_dir / (art_name.replace("/", "_") + ".bin")
        src.write_bytes(data)
        contents[art_name] = data
        specs.append(
            ArtifactSpec(
                art_name,
                version or "1.0",
                src,
                media_type=(media_types or {}).get(art_name, "application/octet-stream"),
                release=(releases or {}).get(art_name),
            )
        )
    out = tmp_path / (f"{name}.tar" if tar else name)
    manifest = create_bundle(
        out,
        specs,
        stream=stream,
        sequence=sequence,
        keys=signing,
        expires=expires,
        sites=sites,
        any_site=any_site,
        trust_updates=trust_updates,
        tar=tar,
        part_size=part_size,
        issued_at=issued_at,
        sha256=sha256,
    )
    return BuiltBundle(out, manifest, signing, contents, src_dir, tar)


# --- raw manifests: for what the writer refuses to produce ------------------------


def sign_payload(
    payload: bytes, keys: Iterable[PrivateKey], payload_type: str = PAYLOAD_TYPE
) -> bytes:
    """Envelope bytes over any payload bytes (no validation)."""
    return sign_envelope(payload_type, payload, list(keys)).to_bytes()


def write_manifest(bundle_dir: Path, envelope_bytes: bytes) -> None:
    (bundle_dir / MANIFEST_FILE).write_bytes(envelope_bytes)


def read_envelope(bundle_dir: Path) -> Envelope:
    return Envelope.from_bytes((bundle_dir / MANIFEST_FILE).read_bytes())


def manifest_dict(bundle_dir: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(read_envelope(bundle_dir).payload)
    return doc


def resign(
    bundle_dir: Path,
    edit: Callable[[dict[str, Any]], None],
    keys: Iterable[PrivateKey],
) -> None:
    """Edit the manifest's JSON in place and sign it again with ``keys``."""
    doc = manifest_dict(bundle_dir)
    edit(doc)
    write_manifest(bundle_dir, sign_payload(canonical_bytes(doc), keys))


def tamper_payload(bundle_dir: Path) -> None:
    """Change the signed payload by one byte, keeping the old signatures."""
    env = read_envelope(bundle_dir)
    payload = env.payload.replace(b'"sequence":', b'"sequence":9', 1)
    assert payload != env.payload
    write_manifest(bundle_dir, Envelope(env.payload_type, payload, env.signatures).to_bytes())


def tamper_signature(bundle_dir: Path, index: int = 0) -> None:
    env = read_envelope(bundle_dir)
    sigs = list(env.signatures)
    s = sigs[index]
    sigs[index] = Signature(s.keyid, bytes([s.sig[0] ^ 1]) + s.sig[1:])
    write_manifest(bundle_dir, Envelope(env.payload_type, env.payload, tuple(sigs)).to_bytes())


def strip_signatures(bundle_dir: Path) -> None:
    env = read_envelope(bundle_dir)
    write_manifest(bundle_dir, Envelope(env.payload_type, env.payload, ()).to_bytes())


def raw_envelope(payload: bytes, signatures: Sequence[tuple[str, bytes]] = ()) -> bytes:
    return json.dumps(
        {
            "payloadType": PAYLOAD_TYPE,
            "payload": base64.b64encode(payload).decode(),
            "signatures": [
                {"keyid": k, "sig": base64.b64encode(s).decode()} for k, s in signatures
            ],
        }
    ).encode()


def flip_bit(path: Path, offset: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 1
    path.write_bytes(bytes(data))


# --- tars ----------------------------------------------------------------------------


def tar_member(
    name: str,
    data: bytes = b"",
    *,
    type: bytes = tarfile.REGTYPE,
    linkname: str = "",
) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = type
    info.linkname = linkname
    info.mode = 0o755 if type == tarfile.DIRTYPE else 0o644
    has_data = type in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)
    info.size = len(data) if has_data else 0
    return info, (data if has_data else None)


def pack_tar(
    out: Path,
    bundle_dir: Path | None = None,
    extra: Sequence[tuple[tarfile.TarInfo, bytes | None]] = (),
    *,
    prefix: str = "",
    fmt: int = tarfile.PAX_FORMAT,
) -> Path:
    """A tar of ``bundle_dir``'s files (sorted, no directory members) plus ``extra`` members."""
    with tarfile.open(out, "w", format=fmt) as tf:
        if bundle_dir is not None:
            for path in sorted(p for p in bundle_dir.rglob("*") if p.is_file()):
                rel = path.relative_to(bundle_dir).as_posix()
                data = path.read_bytes()
                info, _ = tar_member(prefix + rel, data)
                tf.addfile(info, io.BytesIO(data))
        for member, blob in extra:
            tf.addfile(member, io.BytesIO(blob) if blob is not None else None)
    return out


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path
