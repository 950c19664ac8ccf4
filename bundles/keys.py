"""Ed25519 keys: generate, save, load, key ids.

Private keys are PKCS#8 PEM written with mode 0600; public keys are
SubjectPublicKeyInfo PEM. A key id is the SHA-256 hex of the raw 32-byte
public key, so it never depends on how the key was encoded.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from bundles.errors import KeyExistsError, KeyFileNotFoundError, KeyFormatError, OperationalError
from bundles.fdio import write_all
from bundles.files import read_input_file

MAX_KEY_FILE_BYTES = 16 * 1024


def _serialization() -> ModuleType:
    """``cryptography``'s serialization package, imported when first needed: it brings
    its SSH and cipher modules (about 12 ms at every start-up of a command that reads a
    key), while the trust store's keys, written by the appliance, take ``_spki_ed25519``."""
    from cryptography.hazmat.primitives import serialization

    return serialization


# An Ed25519 SubjectPublicKeyInfo is these 12 DER bytes, then the 32 key bytes (RFC 8410).
_SPKI_ED25519 = bytes.fromhex("302a300506032b6570032100")
_PEM_ED25519 = re.compile(
    rb"-----BEGIN PUBLIC KEY-----\n([A-Za-z0-9+/]{59}=)\n-----END PUBLIC KEY-----\n?"
)


def _spki_ed25519(pem: bytes) -> Ed25519PublicKey | None:
    """The key of a PEM in exactly the form ``PublicKey.to_pem`` writes (one base64 line
    of an Ed25519 SubjectPublicKeyInfo, canonical base64, nothing around it); None for
    any other text, which ``serialization.load_pem_public_key`` then decides on."""
    found = _PEM_ED25519.fullmatch(pem)
    if found is None:
        return None
    try:
        der = base64.b64decode(found.group(1), validate=True)
    except binascii.Error:
        return None
    if len(der) != 44 or not der.startswith(_SPKI_ED25519):
        return None
    if base64.b64encode(der) != found.group(1):  # canonical: no stray bits in the last digit
        return None
    return Ed25519PublicKey.from_public_bytes(der[12:])


def key_id(public: Ed25519PublicKey) -> str:
    return hashlib.sha256(public.public_bytes_raw()).hexdigest()


@dataclass(frozen=True)
class PublicKey:
    """A verified-format Ed25519 public key with its id."""

    key: Ed25519PublicKey
    keyid: str

    @classmethod
    def from_pem(cls, pem: bytes) -> PublicKey:
        fast = _spki_ed25519(pem)
        if fast is not None:
            return cls(fast, key_id(fast))
        try:
            loaded = _serialization().load_pem_public_key(pem)
        except (ValueError, TypeError, UnsupportedAlgorithm) as e:
            raise KeyFormatError(f"not a PEM public key: {e}") from e
        if not isinstance(loaded, Ed25519PublicKey):
            raise KeyFormatError("public key is not Ed25519")
        return cls(loaded, key_id(loaded))

    def to_pem(self) -> bytes:
        """The PEM SubjectPublicKeyInfo, byte for byte what ``cryptography`` writes."""
        der = base64.b64encode(_SPKI_ED25519 + self.key.public_bytes_raw())
        return b"-----BEGIN PUBLIC KEY-----\n" + der + b"\n-----END PUBLIC KEY-----\n"

    def verify(self, signature: bytes, message: bytes) -> bool:
        """True when ``signature`` is valid for ``message``; never raises on bad input."""
        try:
            self.key.verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class PrivateKey:
    key: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> PrivateKey:
        return cls(Ed25519PrivateKey.generate())

    @property
    def public(self) -> PublicKey:
        pub = self.key.public_key()
        return PublicKey(pub, key_id(pub))

    @property
    def keyid(self) -> str:
        return self.public.keyid

    def sign(self, message: bytes) -> bytes:
        return self.key.sign(message)

    def to_pem(self) -> bytes:
        serialization = _serialization()
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @classmethod
    def from_pem(cls, pem: bytes) -> PrivateKey:
        try:
            loaded = _serialization().load_pem_private_key(pem, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as e:
            raise KeyFormatError(f"not an unencrypted PEM private key: {e}") from e
        if not isinstance(loaded, Ed25519PrivateKey):
            raise KeyFormatError("private key is not Ed25519")
        return cls(loaded)


def _read_key_file(path: Path) -> bytes:
    data = read_input_file(path, MAX_KEY_FILE_BYTES, "key file", missing=KeyFileNotFoundError)
    if len(data) > MAX_KEY_FILE_BYTES:
        raise KeyFormatError(f"key file {path} is too large to be a key")
    return data


def load_public_key(path: Path) -> PublicKey:
    """Load a public key; a private key file is accepted and its public half used."""
    data = _read_key_file(path)
    if b"PRIVATE KEY" in data:
        return PrivateKey.from_pem(data).public
    return PublicKey.from_pem(data)


def load_private_key(path: Path) -> PrivateKey:
    return PrivateKey.from_pem(_read_key_file(path))


def save_keypair(key: PrivateKey, directory: Path, name: str) -> tuple[Path, Path]:
    """Write ``NAME.key`` (0600, never overwritten) and ``NAME.pub``; return both paths."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError as e:  # a file (or a link to one) where the folder belongs
        raise OperationalError(f"cannot use {directory} for the keys: it is not a folder") from e
    except OSError as e:
        raise OperationalError(f"cannot create {directory}: {e.strerror}") from e
    priv_path = directory / f"{name}.key"
    pub_path = directory / f"{name}.pub"
    try:
        fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as e:
        raise KeyExistsError(f"{priv_path} exists; refusing to overwrite a key") from e
    except OSError as e:
        raise OperationalError(f"cannot create {priv_path}: {e.strerror}") from e
    try:
        os.fchmod(fd, 0o600)
        write_all(fd, key.to_pem())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:  # never through a link planted at NAME.pub
        fd = os.open(pub_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        try:
            write_all(fd, key.public.to_pem())
        finally:
            os.close(fd)
    except OSError as e:
        os.unlink(priv_path)  # made above: no key without its public half
        raise OperationalError(f"cannot write {pub_path}: {e.strerror}") from e
    return priv_path, pub_path


# --- ECDSA public keys of the model-signer role (issue 17) -------------------------
# OpenSSF model-signing signs with ECDSA keys, never Ed25519; these keys only ever
# verify model signatures, never a DSSE document of ours. The key id is what
# model-signing writes as the bundle's key hint: SHA-256 hex of the PEM
# SubjectPublicKeyInfo (as ``cryptography`` serialises it, so encoding-independent).

EC_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384"}


@dataclass(frozen=True)
class EcPublicKey:
    """A P-256 or P-384 public key with its model-signing key id."""

    key: ec.EllipticCurvePublicKey
    keyid: str

    @classmethod
    def from_pem(cls, pem: bytes) -> EcPublicKey:
        try:
            loaded = _serialization().load_pem_public_key(pem)
        except (ValueError, TypeError, UnsupportedAlgorithm) as e:
            raise KeyFormatError(f"not a PEM public key: {e}") from e
        if not isinstance(loaded, ec.EllipticCurvePublicKey):
            raise KeyFormatError("a model-signer key must be an ECDSA P-256 or P-384 key")
        if loaded.curve.name not in EC_CURVES:
            raise KeyFormatError(f"ECDSA curve {loaded.curve.name} is not P-256 or P-384")
        return cls(loaded, hashlib.sha256(_ec_pem(loaded)).hexdigest())

    @property
    def curve(self) -> str:
        return EC_CURVES[self.key.curve.name]

    def to_pem(self) -> bytes:
        return _ec_pem(self.key)

    def verify(self, signature: bytes, message: bytes) -> bool:
        """ECDSA (SHA-256 on P-256, SHA-384 on P-384) over ``message``; never raises."""
        algorithm = hashes.SHA256() if self.key.curve.key_size == 256 else hashes.SHA384()
        try:
            self.key.verify(signature, message, ec.ECDSA(algorithm))
        except (InvalidSignature, ValueError):
            return False
        return True


def _ec_pem(key: ec.EllipticCurvePublicKey) -> bytes:
    serialization = _serialization()
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_ec_public_key(path: Path) -> EcPublicKey:
    """Load a model-signer (ECDSA) public key file."""
    return EcPublicKey.from_pem(_read_key_file(path))
