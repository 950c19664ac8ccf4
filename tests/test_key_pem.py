"""Ed25519 public keys in PEM: the appliance's own reader and writer for the one form it
writes (``bundles.keys._spki_ed25519``, ``PublicKey.to_pem``) give what ``cryptography``
gives, and every other text goes to ``cryptography``'s loader, which decides on it.

The reason is start-up: ``cryptography``'s serialization package brings its SSH and
cipher modules (about 12 ms at every command that reads the trust store); a ``load``,
``verify`` or ``list`` no longer imports it (checked in a fresh interpreter).
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bundles.errors import KeyFormatError
from bundles.keys import PrivateKey, PublicKey, _spki_ed25519

ROOT = Path(__file__).resolve().parent.parent
_SPKI = bytes.fromhex("302a300506032b6570032100")


def _reference_pem(key: PublicKey) -> bytes:
    return key.key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_to_pem_is_byte_for_byte_cryptographys() -> None:
    for _ in range(200):
        public = PrivateKey.generate().public
        assert public.to_pem() == _reference_pem(public)


def test_canonical_pem_reads_as_cryptography_reads_it() -> None:
    for _ in range(200):
        public = PrivateKey.generate().public
        pem = public.to_pem()
        fast = _spki_ed25519(pem)
        assert fast is not None
        assert fast.public_bytes_raw() == public.key.public_bytes_raw()
        loaded = PublicKey.from_pem(pem)
        assert loaded.keyid == public.keyid
        assert PublicKey.from_pem(pem.rstrip(b"\n")).keyid == public.keyid


def _variants(pem: bytes) -> list[bytes]:
    """Other spellings of the same key, and near misses, none in the canonical form."""
    body = pem.split(b"\n")[1]
    der = base64.b64decode(body)
    last = body[-2:-1]
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    # the same 6 bits of the last digit's top, other low bits: not canonical base64
    stray = bytes([alphabet[alphabet.index(last) ^ 1]])
    return [
        pem.replace(b"\n", b"\r\n"),
        b"\n" + pem,
        pem + b"\n",
        pem.replace(b"BEGIN PUBLIC KEY", b"BEGIN  PUBLIC KEY"),
        pem.replace(body, body[:-2] + stray + b"="),
        pem.replace(body, base64.b64encode(bytes([0x30, 0x2B]) + der[1:] + b"\x00")),
        pem.replace(body, base64.b64encode(der[:8] + b"\x71" + der[9:])),  # Ed448 OID
    ]


def test_every_other_text_is_decided_by_cryptography() -> None:
    pem = PrivateKey.generate().public.to_pem()
    zero = pem.replace(pem.split(b"\n")[1], base64.b64encode(_SPKI + b"\x00" * 32))
    assert _spki_ed25519(zero) is not None  # canonical form, whatever the point: as theirs
    for text in [*_variants(pem), zero]:
        if text != zero:
            assert _spki_ed25519(text) is None, text
        try:
            reference = serialization.load_pem_public_key(text)
        except (ValueError, TypeError):
            reference = None
        if reference is None or not hasattr(reference, "public_bytes_raw"):
            with pytest.raises(KeyFormatError):
                PublicKey.from_pem(text)
            continue
        try:
            ours = PublicKey.from_pem(text)
        except KeyFormatError:  # a key of another type: refused as not Ed25519
            assert reference.__class__.__name__ != "Ed25519PublicKey"
            continue
        assert ours.key.public_bytes_raw() == reference.public_bytes_raw()


def test_an_ecdsa_key_is_not_an_ed25519_key() -> None:
    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(KeyFormatError, match="not Ed25519"):
        PublicKey.from_pem(pem)


def test_load_verify_and_list_do_not_import_cryptography_serialization(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest_load import make_site

    site = make_site(tmp_path / "site")
    bundle = site.bundle({"model@1.0": b"weights"})
    home = ["--home", str(site.home)]
    probe = (
        "import json, sys\n"
        "from appliance.cli import main\n"
        "try:\n"
        "    code = main({argv!r})\n"
        "except SystemExit as e:\n"
        "    code = e.code\n"
        "mods = [m for m in sys.modules if m.startswith('cryptography.hazmat.primitives.ser')]\n"
        "print('PROBE ' + json.dumps([code, sorted(mods)]))\n"
    )
    runs = [
        ["import", str(bundle)],  # the import itself may (a trust update, a key file)
        ["load", "model", "-o", str(tmp_path / "out")],
        ["verify"],
        ["list"],
    ]
    for argv in runs:
        proc = subprocess.run(
            [sys.executable, "-c", probe.format(argv=[*home, *argv])],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE ")]
        assert line, proc.stderr
        code, mods = json.loads(line[-1].removeprefix("PROBE "))
        assert code == 0, (argv, proc.stderr)
        if argv[0] != "import":
            assert mods == [], argv
    assert (tmp_path / "out").read_bytes() == b"weights"


def _key_new(out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "appliance", "--json", "key", "new", "k", "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_key_new_into_a_file_is_an_operational_error(tmp_path: Path) -> None:
    """``--out`` naming a file, or a path through one: one line, exit 3 (it was
    ``internal_error``: FileExistsError from mkdir)."""
    plain = tmp_path / "plain"
    plain.write_bytes(b"x")
    for out in (plain, plain / "below"):
        p = _key_new(out)
        assert p.returncode == 3, p.stderr
        assert json.loads(p.stdout)["error"]["code"] == "operational_error"
        assert "Traceback" not in p.stderr
    assert plain.read_bytes() == b"x"


@pytest.mark.parametrize("planted", ["folder", "link"])
def test_key_new_never_writes_through_a_planted_pub_and_leaves_no_half_pair(
    tmp_path: Path, planted: str
) -> None:
    out, target = tmp_path / "keys", tmp_path / "elsewhere"
    out.mkdir()
    if planted == "folder":
        (out / "k.pub").mkdir()
    else:
        (out / "k.pub").symlink_to(target)
    p = _key_new(out)
    assert p.returncode == 3, p.stderr
    assert json.loads(p.stdout)["error"]["code"] == "operational_error"
    assert not (out / "k.key").exists()  # no private key without its public half
    assert not target.exists()  # nothing written where the link points
