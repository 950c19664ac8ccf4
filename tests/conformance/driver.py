"""The test simulator: a repository simulator, homes, media, and the real CLI.

In the style of tuf-conformance: the connected side (keys, trust updates,
bundles, rollback authorizations) is simulated in process with the ``bundles``
library, so a case can change exactly one thing, even what the real writer
refuses to produce; the appliance side is driven through the real command
line, ``sys.executable -m appliance --home H --json ...``, in a subprocess.
``snapshot`` captures everything a script or a responder can see (``list``,
``verify``, ``trust show``, ``audit show`` and the object files), so a case can
assert that a refusal changed nothing but the audit log.

This module holds every primitive the tests build worlds with, once:

- the CLI: ``run_appliance`` (any arguments, output captured), ``cli`` (strict:
  one JSON line, no traceback), ``run_cli`` (the exit code and the JSON object),
  ``run_in_process`` and ``observe`` (read-only commands without an interpreter
  start-up each), ``cli_env``/``cli_argv``;
- keys: ``make_key`` (made, and saved as ``NAME.key|.pub`` when a folder is
  given), ``seeded_key`` (deterministic), ``resolver_for``;
- trust documents: ``trust_envelope``, and ``apply_trust`` (in process, as an
  operator with the home would);
- bundles: ``write_sources`` + ``write_bundle`` (the real writer), ``make_bundle``
  (a bundle with one knob changed), raw manifests for what the writer refuses
  (``sign_payload``, ``write_manifest``, ``resign``, ``tamper_*``, ``raw_envelope``),
  ``flip_bit``; tars: ``tar_member``, ``pack_tar``;
- homes: ``copy_home`` (a template copied with its own trust anchor),
  ``copy_world`` (a folder holding a home, copied likewise), ``rebind_anchor``,
  ``rebind_witness``, ``remove_tree``;
- ``Repo``: keys by name, trust updates, bundles and rollback authorizations;
  ``build_site``: the prepared site every conformance case copies.

The other test worlds (``tests/import_env.py``, ``tests/conftest_load.py``,
``tests/tui/tui_world.py``, ``tests/service/service_world.py``, ...) are
scenarios on top of these primitives.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.anchor import anchor_path, home_key, read_anchor, write_anchor
from appliance.home import Home
from appliance.importer import apply_trust_envelope
from appliance.truststore import load_trust
from bundles.canonical import canonical_bytes
from bundles.documents import (
    ROLLBACK_PAYLOAD_TYPE,
    TRUST_PAYLOAD_TYPE,
    Operation,
    RollbackAuthorization,
    TrustUpdate,
)
from bundles.dsse import Envelope, KeyResolver, Signature, pae, sign_envelope
from bundles.hashing import new_hasher
from bundles.keys import PrivateKey, PublicKey, save_keypair
from bundles.manifest import PAYLOAD_TYPE, Manifest
from bundles.reader import MANIFEST_FILE
from bundles.timeutil import utcnow
from bundles.writer import ArtifactSpec, create_bundle

REPO = Path(__file__).resolve().parents[2]
SITE = "site-a"
CLI_TIMEOUT = 120

Json = dict[str, Any]


# --- the real CLI ------------------------------------------------------------------


@dataclass
class Result:
    """One CLI run: exit code, the single JSON object on stdout, stderr."""

    argv: list[str]
    rc: int
    out: dict[str, Any]
    stderr: str

    @property
    def code(self) -> str | None:
        return error_code(self.out)

    def __str__(self) -> str:
        return f"rc={self.rc} out={json.dumps(self.out)[:800]} stderr={self.stderr[-800:]!r}"


def error_code(doc: Json) -> str | None:
    err = doc.get("error")
    return err.get("code") if isinstance(err, dict) else None


def cli_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for CLI subprocesses: this checkout on the path, no home or witness
    from the tester's environment (only the session's anchor folder and immutable switch)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("APPLIANCE_") or k in ("APPLIANCE_ANCHOR_DIR", "APPLIANCE_IMMUTABLE")
    }
    env["PYTHONPATH"] = str(REPO)
    env.update(extra or {})
    return env


def cli_argv(home: Path, *args: str | os.PathLike[str], witness: Path | None = None) -> list[str]:
    argv = [sys.executable, "-m", "appliance", "--home", str(home), "--json"]
    if witness is not None:
        argv += ["--witness", str(witness)]
    return argv + [os.fspath(a) for a in args]


def parse_json_stdout(stdout: bytes, argv: Sequence[str], stderr: bytes = b"") -> dict[str, Any]:
    """The contract: with ``--json`` stdout holds exactly one JSON object."""
    text = stdout.decode("utf-8")
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, (
        f"{argv}: stdout is not exactly one JSON line: {text[:2000]!r}; "
        f"stderr: {stderr.decode(errors='replace')[-3000:]}"
    )
    doc = json.loads(lines[0])
    assert isinstance(doc, dict) and isinstance(doc.get("ok"), bool), doc
    return doc


def parse_output(rc: int, out: str, err: str, argv: Sequence[str]) -> Json:
    """The JSON object a run printed (any layout), or an assertion naming what it printed."""
    try:
        doc = json.loads(out)
    except json.JSONDecodeError as e:
        raise AssertionError(
            f"{' '.join(argv)} (exit {rc}) did not print one JSON object:\n"
            f"stdout: {out!r}\nstderr: {err}"
        ) from e
    if not isinstance(doc, dict):
        raise AssertionError(f"{' '.join(argv)} printed {doc!r}, not an object")
    return doc


def run_appliance(
    *args: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    timeout: float = CLI_TIMEOUT,
    **kw: Any,
) -> subprocess.CompletedProcess[Any]:
    """``python -m appliance ARGS`` in a subprocess, output captured, with ``cli_env(env)``;
    ``kw`` goes to ``subprocess.run`` (``cwd``, ``text``, ``input``, ``user``, ...)."""
    argv = [sys.executable, "-m", "appliance", *map(os.fspath, args)]
    return subprocess.run(
        argv, capture_output=True, env=cli_env(env), timeout=timeout, check=False, **kw
    )


def cli(
    home: Path,
    *args: str | os.PathLike[str],
    witness: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = CLI_TIMEOUT,
) -> Result:
    argv = cli_argv(home, *args, witness=witness)
    p = run_appliance(*argv[3:], env=env, timeout=timeout, cwd=home.parent)
    out = parse_json_stdout(p.stdout, argv, p.stderr)
    stderr = p.stderr.decode(errors="replace")
    assert out["ok"] is (p.returncode == 0), (argv, out, stderr)
    if p.returncode:
        assert out["exit_code"] == p.returncode, out
        # a one-line error on stderr, no traceback
        assert "Traceback" not in stderr, stderr
    return Result(argv, p.returncode, out, stderr)


def ok(result: Result) -> dict[str, Any]:
    assert result.rc == 0, str(result)
    return result.out


def run_cli(home: Path, *args: str | os.PathLike[str]) -> tuple[int, Json]:
    """Run ``appliance --home HOME --json ARGS`` and return (exit code, JSON object)."""
    argv = cli_argv(home, *args)
    proc = run_appliance(*argv[3:], text=True)
    return proc.returncode, parse_output(proc.returncode, proc.stdout, proc.stderr, argv)


def run_many(home: Path, commands: Sequence[Sequence[str]]) -> list[tuple[int, Json]]:
    """Run several read-only commands at once (they share nothing but the database)."""
    env = cli_env()
    procs = [
        (
            cli_argv(home, *c),
            subprocess.Popen(
                cli_argv(home, *c),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            ),
        )
        for c in commands
    ]
    results: list[tuple[int, Json]] = []
    for argv, p in procs:
        out, err = p.communicate(timeout=CLI_TIMEOUT)
        results.append((p.returncode, parse_output(p.returncode, out, err, argv)))
    return results


def run_in_process(home: Path, *args: str | os.PathLike[str]) -> tuple[int, Json]:
    """The same CLI entry point, in this process: for loops that run many read-only checks.

    No interpreter start-up per command; the code path from argument parsing to
    the JSON object is the one the subprocess runs.
    """
    from appliance.cli.main import main

    argv = cli_argv(home, *args)[3:]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, parse_output(rc, out.getvalue(), err.getvalue(), argv)


# --- keys and trust documents ---------------------------------------------------------


def make_key(keydir: Path | None = None, name: str = "key") -> PrivateKey:
    """A new Ed25519 key; with ``keydir`` also saved as ``NAME.key`` and ``NAME.pub`` there."""
    key = PrivateKey.generate()
    if keydir is not None:
        save_keypair(key, keydir, name)
    return key


def seeded_key(seed: int) -> PrivateKey:
    """The same key every run (fixed key ids and signatures for screenshots)."""
    return PrivateKey(Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32))


def resolver_for(*keys: PrivateKey | PublicKey) -> KeyResolver:
    """A resolver that knows exactly these keys."""
    table = {k.keyid: (k.public if isinstance(k, PrivateKey) else k) for k in keys}
    return table.get


def trust_envelope(
    version: int,
    ops: Sequence[Operation],
    keys: Iterable[PrivateKey],
    issued_at: datetime | None = None,
) -> Envelope:
    """A trust update of ``ops`` at ``version``, signed by ``keys``."""
    doc = TrustUpdate(version, issued_at or utcnow(), tuple(ops))
    return sign_envelope(TRUST_PAYLOAD_TYPE, doc.to_payload(), list(keys))


def apply_trust(
    home: Path | Home, env: Envelope | bytes, *, witness: Path | None = None, source: str = "test"
) -> None:
    """Apply a trust update to a home in process (as root with the home, like an operator);
    with ``witness``, the witness is brought up to date too."""
    h = home if isinstance(home, Home) else Home(home)
    envelope = env if isinstance(env, Envelope) else Envelope.from_bytes(env)
    db = h.db()
    try:
        apply_trust_envelope(db, load_trust(db), envelope, source)
        if witness is not None:
            from appliance import witness as w

            w.refresh(db, witness)
    finally:
        db.conn.close()


# --- bundles ---------------------------------------------------------------------------

Artifacts = Mapping[str, bytes] | Sequence[tuple[str, bytes]]


def write_sources(
    src: Path,
    artifacts: Artifacts,
    *,
    file_name: str = "a{i}.bin",
    default_version: str = "1.0",
    releases: Mapping[str, int] | None = None,
    media_types: Mapping[str, str] | None = None,
) -> list[ArtifactSpec]:
    """Write ``NAME@VERSION -> bytes`` as source files under ``src``; their writer specs.

    ``file_name`` (fields ``i``, ``name``, ``version``, ``flat``: the name with ``/``
    as ``_``) names each file, and so its path in the bundle. ``releases`` and
    ``media_types`` are keyed by ``NAME@VERSION`` or by ``NAME``.
    """
    items = list(artifacts.items()) if isinstance(artifacts, Mapping) else list(artifacts)
    src.mkdir(parents=True, exist_ok=True)
    specs = []
    for i, (ref, data) in enumerate(items):
        name, _, version = ref.partition("@")
        version = version or default_version
        f = src / file_name.format(i=i, name=name, version=version, flat=name.replace("/", "_"))
        f.write_bytes(data)
        extra: dict[str, Any] = {}
        for table, key in ((releases, "release"), (media_types, "media_type")):
            if table is not None and (ref in table or name in table):
                extra[key] = table[ref] if ref in table else table[name]
        specs.append(ArtifactSpec(name, version, f, **extra))
    return specs


def write_bundle(
    out: Path,
    specs: Sequence[ArtifactSpec],
    keys: Sequence[PrivateKey],
    *,
    stream: str = "models",
    sequence: int = 1,
    expires: datetime | None = None,
    issued_at: datetime | None = None,
    sites: Sequence[str] = (),
    any_site: bool | None = None,
    trust_updates: Sequence[bytes | Path] = (),
    tar: bool = False,
    part_size: int | None = None,
    sha256: bool = False,
) -> Manifest:
    """A signed bundle through the real writer. ``expires`` defaults to 30 days from
    now; ``any_site`` to "no sites named"; trust updates may be given as files."""
    return create_bundle(
        out,
        specs,
        stream=stream,
        sequence=sequence,
        keys=list(keys),
        expires=expires or utcnow() + timedelta(days=30),
        issued_at=issued_at,
        sites=sites,
        any_site=not sites if any_site is None else any_site,
        trust_updates=[t.read_bytes() if isinstance(t, Path) else t for t in trust_updates],
        tar=tar,
        part_size=part_size,
        sha256=sha256,
    )


@dataclass
class Built:
    """A bundle made in a test: where it is, its manifest, what went in."""

    path: Path  # the bundle directory, or the tar file
    manifest: Manifest
    contents: dict[str, bytes]  # artifact (name, or NAME@VERSION for a Repo) -> its bytes
    keys: list[PrivateKey] = field(default_factory=list)  # every key that signed
    sources: Path | None = None  # where the source files were written
    tar: bool = False

    @property
    def key(self) -> PrivateKey:
        return self.keys[0]

    def resolver(self) -> KeyResolver:
        return resolver_for(*self.keys)

    def file(self, name: str, part: int | None = None) -> Path:
        """The media file of an artifact (directory bundles only)."""
        art = self.manifest.artifact(name)
        assert art is not None, name
        return self.path / art.files[part if part is not None else 0].path

    def envelope(self) -> Envelope:
        return read_envelope(self.path)

    def doc(self) -> dict[str, Any]:
        return manifest_dict(self.path)


DEFAULT_ARTIFACTS: dict[str, bytes] = {
    "model@1.0": b"weights " * 300,  # 2,400 bytes: several parts at part_size=1000
    "tokenizer@1.0": b'{"vocab": ["a", "b"]}\n',
}


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
) -> Built:
    """A valid signed bundle under ``tmp_path``; every knob changes one thing.

    ``artifacts`` maps ``NAME@VERSION`` to bytes. ``any_site`` defaults to True
    unless ``sites`` are given. An ``expires`` in the past makes an expired
    bundle (issued a day before it expired). ``keys`` sign (default: one new
    key); ``extra_keys`` sign too (duplicate keys give duplicate signatures).
    """
    artifacts = DEFAULT_ARTIFACTS if artifacts is None else artifacts
    signing = [*(keys if keys is not None else [make_key()]), *extra_keys]
    now = utcnow()
    expires = expires or now + timedelta(days=30)
    if issued_at is None and expires <= now:
        issued_at = expires - timedelta(days=1)
    src = tmp_path / f"{name}.src"
    specs = write_sources(
        src, artifacts, file_name="{flat}.bin", releases=releases, media_types=media_types
    )
    out = tmp_path / (f"{name}.tar" if tar else name)
    manifest = write_bundle(
        out,
        specs,
        signing,
        stream=stream,
        sequence=sequence,
        expires=expires,
        issued_at=issued_at,
        sites=sites,
        any_site=any_site,
        trust_updates=trust_updates,
        tar=tar,
        part_size=part_size,
        sha256=sha256,
    )
    contents = {ref.partition("@")[0]: data for ref, data in artifacts.items()}
    return Built(out, manifest, contents, signing, src, tar)


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


def manifest_of(bundle: Path) -> Manifest:
    """The manifest a bundle directory claims (unverified; tests know what they wrote)."""
    return Manifest.from_payload(read_envelope(bundle).payload)


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


def duplicate_signature_envelope(env: Envelope, key: PrivateKey, copies: int) -> Envelope:
    """The same key's signature ``copies`` times (DSSE allows lists; count once)."""
    sig = key.sign(pae(env.payload_type, env.payload))
    return Envelope(
        env.payload_type, env.payload, tuple(Signature(key.keyid, sig) for _ in range(copies))
    )


def flip_bit(path: Path, offset: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 1
    path.write_bytes(bytes(data))


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


# --- tars ------------------------------------------------------------------------------

TarExtra = tuple[tarfile.TarInfo, bytes | None]


def tar_member(
    name: str, data: bytes = b"", *, type: bytes = tarfile.REGTYPE, linkname: str = ""
) -> TarExtra:
    """One tar member of any type (a device is 1:3), with ``data`` where the type has any."""
    info = tarfile.TarInfo(name)
    info.type = type
    info.linkname = linkname
    info.mode = 0o755 if type == tarfile.DIRTYPE else 0o644
    if type in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3
    has_data = type in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)
    info.size = len(data) if has_data else 0
    return info, (data if has_data else None)


def pack_tar(
    out: Path,
    bundle_dir: Path | None = None,
    extra: Sequence[TarExtra] = (),
    *,
    skip: Iterable[str] = (),
    fmt: int = tarfile.PAX_FORMAT,
) -> Path:
    """An uncompressed tar (PAX unless ``fmt``) of a (possibly edited) bundle directory,
    then the ``extra`` members.

    Members go in sorted order, each folder's files before its subfolders, every
    folder as a member before what it holds; ``skip`` leaves files out. Symlinks
    and special files in the directory are packed as what they are.
    """
    skipped = set(skip)
    with tarfile.open(out, "w", format=fmt, encoding="utf-8") as tf:
        for dirpath, dirnames, filenames in os.walk(bundle_dir) if bundle_dir else ():
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, bundle_dir)
            if rel_dir != ".":
                tf.add(dirpath, arcname=rel_dir, recursive=False)
            for name in sorted(filenames):
                rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                if rel not in skipped:
                    tf.add(os.path.join(dirpath, name), arcname=rel, recursive=False)
        for info, data in extra:
            tf.addfile(info, None if data is None else io.BytesIO(data))
    return out


# --- homes ---------------------------------------------------------------------------
#
# A home's trust anchor (outside the home) names the place of the home it belongs to,
# so a plain ``cp -a`` of a home is, to the appliance, a forensic copy that only
# ``--read-only`` may examine. Tests that want a fresh *working* home from a template
# re-bind the copy: they write the anchor that ``init`` would have written at the new
# place (an operator cannot do this without write access to the anchor folder, which a
# writer of the home does not have).


def rebind_anchor(src_home: Path, dst_home: Path, *, witness: Path | None = None) -> Path:
    """Write an anchor for ``dst_home`` from ``src_home``'s, naming ``witness`` (or none)."""
    anchor = replace(
        read_anchor(anchor_path(src_home)),
        path=anchor_path(dst_home),
        home=home_key(dst_home),
        witness=Path(os.path.abspath(witness)) if witness is not None else None,
    )
    write_anchor(anchor, replace=True)
    return anchor.path


def rebind_witness(witness: Path, home: Path) -> None:
    """A copied witness file made to belong to the copied ``home``."""
    doc = json.loads(witness.read_text())
    doc["home"] = os.path.realpath(home)
    witness.write_text(json.dumps(doc, sort_keys=True))


def copy_home(
    src: Path,
    dst: Path,
    *,
    witness_src: Path | None = None,
    witness_dst: Path | None = None,
) -> Path:
    """``cp -a`` of a home (modes, times, everything) re-bound to its new place.

    With ``witness_src`` and ``witness_dst``, the witness is copied too and the
    copy's anchor names the copied witness.
    """
    if dst.exists():
        shutil.rmtree(dst)
    subprocess.run(["cp", "-a", str(src), str(dst)], check=True)
    if witness_src is not None and witness_dst is not None:
        subprocess.run(["cp", "-a", str(witness_src), str(witness_dst)], check=True)
        rebind_witness(witness_dst, dst)
    rebind_anchor(src, dst, witness=witness_dst)
    return dst


def copy_world(src: Path, dst: Path, home: Path) -> Path:
    """A whole test world (home, keys, media, ...) copied from ``src`` to ``dst`` (emptied
    first; links kept as links), its ``home`` re-bound to its new place: the new home."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, symlinks=True)
    new_home = dst / home.relative_to(src)
    rebind_anchor(home, new_home)
    return new_home


def remove_tree(path: Path) -> None:
    """Remove a tree that may hold 0444 files or read-only folders."""
    for dirpath, dirs, _files in os.walk(path):
        for d in dirs:
            os.chmod(os.path.join(dirpath, d), 0o755)
    os.chmod(path, 0o755)
    shutil.rmtree(path)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- the repository simulator (connected side, in process) ---------------------------


class Repo:
    """Keys, trust updates, bundles and rollback authorizations, made in process.

    ``key(name)`` makes (once) and saves ``keys/NAME.key|.pub``. Nothing here
    talks to the appliance; the CLI (``cli``) applies what the repo makes.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.keydir = root / "keys"
        self.keys: dict[str, PrivateKey] = {}
        self.counter = 0

    def key(self, name: str) -> PrivateKey:
        if name not in self.keys:
            self.keys[name] = make_key(self.keydir, name)
        return self.keys[name]

    def pub(self, name: str) -> Path:
        self.key(name)
        return self.keydir / f"{name}.pub"

    def fresh(self, stem: str) -> Path:
        self.counter += 1
        path = self.root / f"{stem}-{self.counter}"
        return path

    # trust updates

    def trust_update(
        self,
        version: int,
        ops: Sequence[Operation],
        signers: Iterable[str] = ("root",),
        issued_at: datetime | None = None,
    ) -> Envelope:
        return trust_envelope(version, ops, [self.key(s) for s in signers], issued_at)

    def write(self, env: Envelope | bytes, stem: str = "doc") -> Path:
        path = self.fresh(stem).with_suffix(".dsse.json")
        path.write_bytes(env if isinstance(env, bytes) else env.to_bytes())
        return path

    # homes, through the real CLI

    def init_home(self, home: Path, *, site: str = SITE, witness: Path | None = None) -> None:
        """``appliance init`` of ``home`` trusting this repo's ``root`` key."""
        ok(cli(home, "init", "--root-key", self.pub("root"), "--site", site, witness=witness))

    def apply(self, home: Path, env: Envelope, *, witness: Path | None = None) -> Json:
        """``appliance trust apply`` of a trust update this repo made."""
        return ok(cli(home, "trust", "apply", self.write(env, "trust"), witness=witness))

    # bundles

    def bundle(
        self,
        artifacts: Mapping[str, bytes],
        *,
        stream: str = "models",
        sequence: int,
        signers: Iterable[str] = ("pub",),
        expires: datetime | None = None,
        issued_at: datetime | None = None,
        sites: Sequence[str] = (SITE,),
        any_site: bool = False,
        trust_updates: Sequence[bytes] = (),
        tar: bool = False,
        part_size: int | None = None,
        releases: Mapping[str, int] | None = None,
    ) -> Built:
        """A valid signed bundle of ``NAME@VERSION -> bytes`` through the real writer."""
        out = self.fresh("bundle")
        specs = write_sources(out.with_name(out.name + ".src"), artifacts, releases=releases)
        if tar:
            out = out.with_suffix(".tar")
        manifest = write_bundle(
            out,
            specs,
            [self.key(s) for s in signers],
            stream=stream,
            sequence=sequence,
            expires=expires,
            issued_at=issued_at,
            sites=() if any_site else sites,
            any_site=any_site,
            trust_updates=trust_updates,
            tar=tar,
            part_size=part_size,
        )
        return Built(out, manifest, dict(artifacts))

    def sign(
        self, payload: bytes, signers: Iterable[str], payload_type: str = PAYLOAD_TYPE
    ) -> Envelope:
        return sign_envelope(payload_type, payload, [self.key(s) for s in signers])

    def resign(self, bundle_dir: Path, doc: dict[str, Any], signers: Iterable[str]) -> None:
        """Replace a directory bundle's manifest with ``doc`` signed by ``signers``."""
        write_manifest(bundle_dir, self.sign(canonical_bytes(doc), signers).to_bytes())

    # rollback authorizations

    def rollback_auth(
        self,
        name: str,
        to_version: str,
        *,
        signers: Iterable[str] = ("rb",),
        digest: str | None = None,
        reason: str = "conformance",
        expires: datetime | None = None,
        issued_at: datetime | None = None,
        sites: Sequence[str] = (),
        auth_id: str | None = None,
    ) -> Envelope:
        issued = issued_at or utcnow()
        doc = RollbackAuthorization(
            id=auth_id or os.urandom(16).hex(),
            name=name,
            to_version=to_version,
            reason=reason,
            issued_at=issued,
            expires=expires or issued + timedelta(days=7),
            digest=digest,
            sites=tuple(sites),
            any_site=not sites,
        )
        return sign_envelope(
            ROLLBACK_PAYLOAD_TYPE, doc.to_payload(), [self.key(s) for s in signers]
        )


# --- what a script or responder can see -------------------------------------------


def _blake3_file(path: Path) -> str:

    h = new_hasher(path.stat().st_size)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return str(h.hexdigest())


def object_files(home: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under objects/: relative path -> (size, mode, BLAKE3 of its bytes)."""
    out: dict[str, tuple[int, int, str]] = {}
    root = home / "objects"
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            st = p.lstat()
            digest = _blake3_file(p) if stat.S_ISREG(st.st_mode) else "not-a-file"
            out[str(p.relative_to(root))] = (st.st_size, stat.S_IMODE(st.st_mode), digest)
    return out


def staging_files(home: Path) -> list[str]:
    staging = home / "staging"
    return sorted(os.listdir(staging)) if staging.is_dir() else []


@dataclass
class Snapshot:
    listing: Any
    verify: tuple[int, Any]
    trust: dict[str, Any]
    audit: list[dict[str, Any]]
    objects: dict[str, tuple[int, int, str]]
    staging: list[str] = field(default_factory=list)


def stable_trust(doc: Json) -> Json:
    """``trust show`` without what moves by itself: trusted time is max(clock, floor) and
    the clock moves; the anchor names the home's own place (a copy has its own)."""
    return {k: v for k, v in doc.items() if k not in ("trusted_time", "ok", "anchor")}


def stable_list(doc: Json) -> list[Json]:
    """``list`` records without the import timestamp (differs between equal runs)."""
    return [{k: v for k, v in a.items() if k != "imported_at"} for a in doc["artifacts"]]


# One interpreter runs the read-only commands through the real CLI entry point
# (``appliance.cli.main.main``), each with its own captured stdout: the same code
# path as four subprocesses at a quarter of the start-up cost.
_OBSERVE = r"""
import contextlib, io, json, sys
from appliance.cli.main import main
base, out = json.loads(sys.argv[1]), []
for cmd in json.loads(sys.argv[2]):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()):
        rc = main(base + cmd)
    out.append([rc, buf.getvalue()])
sys.stdout.write(json.dumps(out))
"""
OBSERVED = (["list"], ["verify"], ["trust", "show"], ["audit", "show", "--limit", "0"])


def observe(
    home: Path, commands: Sequence[Sequence[str]], witness: Path | None = None
) -> list[Result]:
    """Run read-only CLI commands in one fresh interpreter; one ``Result`` each."""
    base = cli_argv(home, witness=witness)[3:]
    argv = [
        sys.executable,
        "-c",
        _OBSERVE,
        json.dumps(base),
        json.dumps([list(c) for c in commands]),
    ]
    p = subprocess.run(
        argv, capture_output=True, env=cli_env(), cwd=home.parent, timeout=CLI_TIMEOUT, check=False
    )
    assert p.returncode == 0, p.stderr.decode(errors="replace")[-3000:]
    results = []
    for cmd, (rc, stdout) in zip(commands, json.loads(p.stdout), strict=True):
        out = parse_json_stdout(stdout.encode(), [*base, *cmd])
        assert out["ok"] is (rc == 0), out
        results.append(Result([*base, *cmd], rc, out, ""))
    return results


def home_files(home: Path) -> dict[str, bytes]:
    """Every file under the home (the database, the objects, the rest) and its SHA-256:
    what a read-only command must leave as it was, byte for byte."""
    return {
        str(p.relative_to(home)): hashlib.sha256(p.read_bytes()).digest()
        for p in sorted(home.rglob("*"))
        if p.is_file()
    }


def outside_db(files: dict[str, bytes]) -> dict[str, bytes]:
    """``home_files`` but the state database (a refused load records its event there)."""
    return {k: v for k, v in files.items() if not k.startswith("appliance.db")}


def snapshot(home: Path, witness: Path | None = None) -> Snapshot:
    listing, v, trust, events = observe(home, OBSERVED, witness)
    return Snapshot(
        ok(listing)["artifacts"],
        (v.rc, (v.out.get("results"), v.code)),
        stable_trust(ok(trust)),
        ok(events)["events"],
        object_files(home),
        staging_files(home),
    )


def assert_unchanged(before: Snapshot, after: Snapshot) -> None:
    assert after.listing == before.listing, "list --json changed"
    assert after.verify == before.verify, "verify --json changed"
    assert after.trust == before.trust, "trust show --json changed"
    assert after.objects == before.objects, "object files (names, sizes, modes, bytes) changed"
    assert after.staging == [], f"staging left behind: {after.staging}"
    assert after.audit[: len(before.audit)] == before.audit, "audit history was rewritten"


def new_events(before: Snapshot, after: Snapshot) -> list[dict[str, Any]]:
    return after.audit[len(before.audit) :]


def assert_audited_rejection(before: Snapshot, after: Snapshot, code: str) -> dict[str, Any]:
    """Exactly one new audit event: outcome ``rejected`` with ``code``."""
    events = new_events(before, after)
    assert len(events) == 1, f"expected one audit event, got {events}"
    assert events[0]["outcome"] == "rejected", events
    assert events[0]["code"] == code, events
    return events[0]


# --- a prepared site: the template every case copies -----------------------------------

# stream -> publisher keys; "dual" needs 2 of its 2 keys; "old" is revoked at version 3
PUBLISHERS = {"models": ("pub", "pub2", "old"), "dual": ("dual1", "dual2"), "other": ("other",)}
M1 = b"model weights v1 " * 256  # 4,352 bytes
M2 = b"model weights v2 " * 256
TOK = b'{"vocab": ["a", "b", "c"]}\n' * 16


@dataclass
class Site:
    """A home at trust version 3 with five artifacts, and the repo that made it.

    Trust: root (threshold 1); publishers per ``PUBLISHERS`` (``old`` revoked);
    ``rb`` the rollback role. Store: models seq 2 (``m@1.0``, ``m@2.0`` active,
    ``tok@1.0``), dual seq 1 (``d@1.0``), other seq 1 (``o@1.0``).
    """

    repo: Repo
    home: Path
    witness: Path | None
    trust_version: int
    bundles: dict[str, Built]
    snapshot: Snapshot


def build_site(root: Path, *, witness: bool = False) -> Site:
    from bundles.documents import AddKey, RevokeKey, SetThreshold

    root.mkdir(parents=True, exist_ok=True)
    repo = Repo(root)
    home = root / "home"
    wpath = root / "witness.json" if witness else None
    repo.init_home(home, witness=wpath)
    ops: list[Operation] = []
    for stream, names in PUBLISHERS.items():
        ops += [AddKey(repo.key(n).public, "publisher", stream) for n in names]
    ops += [AddKey(repo.key("rb").public, "rollback", None), SetThreshold("publisher", "dual", 2)]
    repo.apply(home, repo.trust_update(2, ops), witness=wpath)
    repo.apply(home, repo.trust_update(3, [RevokeKey(repo.key("old").keyid)]), witness=wpath)
    bundles = {
        "models1": repo.bundle({"m@1.0": M1}, sequence=1),
        "models2": repo.bundle({"m@2.0": M2, "tok@1.0": TOK}, sequence=2),
        "dual1": repo.bundle(
            {"d@1.0": b"dual " * 100}, stream="dual", sequence=1, signers=("dual1", "dual2")
        ),
        "other1": repo.bundle(
            {"o@1.0": b"other " * 100}, stream="other", sequence=1, signers=("other",)
        ),
    }
    for b in bundles.values():
        ok(cli(home, "import", b.path, witness=wpath))
    return Site(repo, home, wpath, 3, bundles, snapshot(home, wpath))
