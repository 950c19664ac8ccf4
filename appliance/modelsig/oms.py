"""OpenSSF model-signing (OMS) signature files, read strictly and verified offline.

An OMS signature made with the key method (``model_signing sign key``, or
``model_signing.signing.Config().use_elliptic_key_signer(...)``) is a Sigstore
bundle (JSON, media type ``application/vnd.dev.sigstore.bundle.v0.3+json``)::

    {"mediaType": ..., "verificationMaterial": {"publicKey": {"hint": KEYID},
     "tlogEntries": []}, "dsseEnvelope": {"payload": B64, "payloadType":
     "application/vnd.in-toto+json", "signatures": [{"sig": B64, "keyid": ""}]}}

The signature is ECDSA (SHA-256 on P-256, SHA-384 on P-384, DER) over the DSSE
PAE of the payload. The payload is an in-toto Statement v1 whose one subject
is the model (name, and ``sha256`` of the concatenated per-file digests: the
root digest) and whose predicate (``https://model_signing/signature/v1.0``)
lists every file with its digest::

    {"serialization": {"method": "files", "hash_type": "sha256"|"blake3",
     "allow_symlinks": false, "ignore_paths": [...]},
     "resources": [{"name": "sub/file", "algorithm": "sha256", "digest": HEX}, ...]}

Fail closed: unknown fields, another bundle kind (certificates, transparency
log entries), another predicate, shard serialization over sha256 (its digests
are of byte ranges, not of whole files), more than one signature, and a
resource list that does not hash to the root digest are all refused. Pure:
no I/O, no dependency on ``model-signing`` or ``sigstore``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from typing import Any

from appliance.errors import ModelSignatureInvalidError
from bundles.canonical import parse_json
from bundles.errors import RejectedError
from bundles.keys import EcPublicKey

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
DSSE_PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
HASH_TYPES = {"sha256": 64, "blake3": 64}  # hash type -> hex digest length
MAX_SIGNATURE_BYTES = 32 << 20  # about 100,000 files (the bundle's artifact limit)
MAX_RESOURCES = 100_000
_HEX = re.compile(r"^[0-9a-f]+$")


def _invalid(message: str) -> ModelSignatureInvalidError:
    return ModelSignatureInvalidError(f"model signature: {message}")


def _obj(
    value: Any, what: str, required: set[str], optional: frozenset[str] = frozenset()
) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _invalid(f"{what} must be an object")
    missing, extra = required - set(value), set(value) - required - optional
    if missing:
        raise _invalid(f"{what} lacks {', '.join(sorted(missing))}")
    if extra:
        raise _invalid(f"{what} has unknown field(s) {', '.join(sorted(extra))}")
    return value


def _str(value: Any, what: str, max_len: int = 4096) -> str:
    if not isinstance(value, str) or len(value) > max_len:
        raise _invalid(f"{what} must be a string of at most {max_len} characters")
    return value


def _hex(value: Any, what: str, length: int) -> str:
    text = _str(value, what)
    if len(text) != length or not _HEX.match(text):
        raise _invalid(f"{what} must be {length} lowercase hex characters")
    return text


def _b64(value: Any, what: str) -> bytes:
    text = _str(value, what, MAX_SIGNATURE_BYTES)
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as e:
        raise _invalid(f"{what} is not valid base64") from e


def _json(data: bytes, what: str) -> Any:
    try:
        return parse_json(data, what=what, max_bytes=MAX_SIGNATURE_BYTES)
    except RejectedError as e:  # too large, too deep, not JSON, duplicate keys
        raise _invalid(e.message) from e


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 Pre-Authentication Encoding."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


@dataclass(frozen=True)
class SignatureFile:
    """An OMS signature file, parsed but NOT verified."""

    key_hint: str | None  # the signer's key id as the file claims it
    payload: bytes
    signature: bytes

    @classmethod
    def parse(cls, data: bytes) -> SignatureFile:
        doc = _obj(
            _json(data, "signature file"),
            "signature file",
            {"mediaType", "verificationMaterial", "dsseEnvelope"},
        )
        if doc["mediaType"] != BUNDLE_MEDIA_TYPE:
            raise _invalid(f"media type must be {BUNDLE_MEDIA_TYPE} (the key method's bundle)")
        vm = _obj(
            doc["verificationMaterial"],
            "verificationMaterial",
            {"publicKey"},
            frozenset({"tlogEntries"}),
        )
        if vm.get("tlogEntries", []) != []:
            raise _invalid("transparency log entries are not checked offline: none may be given")
        pk = _obj(vm["publicKey"], "verificationMaterial.publicKey", set(), frozenset({"hint"}))
        hint = None if pk.get("hint") in (None, "") else _hex(pk["hint"], "key hint", 64)
        env = _obj(doc["dsseEnvelope"], "dsseEnvelope", {"payload", "payloadType", "signatures"})
        if env["payloadType"] != DSSE_PAYLOAD_TYPE:
            raise _invalid(f"payload type must be {DSSE_PAYLOAD_TYPE}")
        sigs = env["signatures"]
        if not isinstance(sigs, list) or len(sigs) != 1:
            raise _invalid("the envelope must carry exactly one signature")
        sig = _obj(sigs[0], "signatures[0]", {"sig"}, frozenset({"keyid"}))
        if "keyid" in sig:
            _str(sig["keyid"], "signatures[0].keyid", 256)
        return cls(hint, _b64(env["payload"], "payload"), _b64(sig["sig"], "signature"))

    def verify(self, key: EcPublicKey) -> None:
        """Raise unless the signature verifies under ``key`` (returns nothing: fail closed)."""
        if not key.verify(self.signature, pae(DSSE_PAYLOAD_TYPE, self.payload)):
            raise _invalid(f"the signature does not verify under key {key.keyid[:16]}")


@dataclass(frozen=True)
class Resource:
    name: str  # path relative to the model root ("." when the model is one file)
    digest: str  # hex


@dataclass(frozen=True)
class ModelStatement:
    """What a verified signature says: the model, its root digest, every file's digest."""

    model_name: str
    root_digest: str  # sha256 hex over the concatenated per-file digests, in listed order
    hash_type: str  # "sha256" or "blake3"
    resources: tuple[Resource, ...]

    @classmethod
    def parse(cls, payload: bytes) -> ModelStatement:
        doc = _obj(
            _json(payload, "statement"),
            "statement",
            {"_type", "subject", "predicateType", "predicate"},
        )
        if doc["_type"] != STATEMENT_TYPE:
            raise _invalid(f"_type must be {STATEMENT_TYPE}")
        if doc["predicateType"] != PREDICATE_TYPE:
            raise _invalid(f"predicateType must be {PREDICATE_TYPE}")
        subjects = doc["subject"]
        if not isinstance(subjects, list) or len(subjects) != 1:
            raise _invalid("the statement must have exactly one subject (the model)")
        subject = _obj(subjects[0], "subject[0]", {"name", "digest"})
        digest = _obj(subject["digest"], "subject[0].digest", {"sha256"})
        root = _hex(digest["sha256"], "root digest", 64)
        pred = _obj(doc["predicate"], "predicate", {"serialization", "resources"})
        ser = _obj(
            pred["serialization"],
            "serialization",
            {"method", "hash_type", "allow_symlinks"},
            frozenset({"ignore_paths", "shard_size"}),
        )
        hash_type = ser["hash_type"]
        if ser["method"] != "files":
            raise _invalid(
                f"serialization {ser['method']!r} is not supported: its digests cover byte "
                "ranges, not whole files (sign with file serialization)"
            )
        if hash_type not in HASH_TYPES:
            raise _invalid(f"hash type {hash_type!r} is not supported (sha256 or blake3)")
        if not isinstance(ser["allow_symlinks"], bool):
            raise _invalid("serialization.allow_symlinks must be a boolean")
        ignored = ser.get("ignore_paths", [])
        if not isinstance(ignored, list) or not all(isinstance(p, str) for p in ignored):
            raise _invalid("serialization.ignore_paths must be a list of strings")
        raw = pred["resources"]
        if not isinstance(raw, list) or not raw or len(raw) > MAX_RESOURCES:
            raise _invalid(f"resources must be a list of 1 to {MAX_RESOURCES} files")
        resources: list[Resource] = []
        seen: set[str] = set()
        hasher = hashlib.sha256()
        for i, r in enumerate(raw):
            r = _obj(r, f"resources[{i}]", {"name", "algorithm", "digest"})
            if r["algorithm"] != hash_type:
                raise _invalid(f"resources[{i}] uses {r['algorithm']!r}, not {hash_type}")
            name = _str(r["name"], f"resources[{i}].name", 1024)
            if name in seen:
                raise _invalid(f"file {name!r} is listed twice")
            seen.add(name)
            hexdigest = _hex(r["digest"], f"resources[{i}].digest", HASH_TYPES[hash_type])
            hasher.update(bytes.fromhex(hexdigest))
            resources.append(Resource(name, hexdigest))
        if hasher.hexdigest() != root:
            raise _invalid("the file digests do not hash to the statement's root digest")
        return cls(_str(subject["name"], "subject name", 1024), root, hash_type, tuple(resources))


__all__ = [
    "BUNDLE_MEDIA_TYPE",
    "MAX_SIGNATURE_BYTES",
    "ModelStatement",
    "Resource",
    "SignatureFile",
    "pae",
]
