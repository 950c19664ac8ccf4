"""Black-box conformance driver: a repository simulator and the real CLI.

In the style of tuf-conformance: the connected side (keys, trust updates,
bundles, rollback authorizations) is simulated in process with the ``bundles``
library, so a case can change exactly one thing, even what the real writer
refuses to produce; the appliance side is only ever driven through the real
command line, ``sys.executable -m appliance --home H --json ...``, in a
subprocess. ``snapshot`` captures everything a script or a responder can see
(``list``, ``verify``, ``trust show``, ``audit show`` and the object files),
so a case can assert that a refusal changed nothing but the audit log.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import homecopy

from bundles.canonical import canonical_bytes
from bundles.documents import (
    ROLLBACK_PAYLOAD_TYPE,
    TRUST_PAYLOAD_TYPE,
    Operation,
    RollbackAuthorization,
    TrustUpdate,
)
from bundles.dsse import Envelope, Signature, pae, sign_envelope
from bundles.keys import PrivateKey, save_keypair
from bundles.manifest import PAYLOAD_TYPE, Manifest
from bundles.reader import MANIFEST_FILE
from bundles.timeutil import utcnow
from bundles.writer import ArtifactSpec, create_bundle

REPO = Path(__file__).resolve().parents[2]
SITE = "site-a"
CLI_TIMEOUT = 120


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
        err = self.out.get("error")
        return None if not isinstance(err, dict) else err.get("code")

    def __str__(self) -> str:
        return f"rc={self.rc} out={json.dumps(self.out)[:800]} stderr={self.stderr[-800:]!r}"


def cli_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
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


def cli(
    home: Path,
    *args: str | os.PathLike[str],
    witness: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = CLI_TIMEOUT,
) -> Result:
    argv = cli_argv(home, *args, witness=witness)
    p = subprocess.run(
        argv, capture_output=True, env=cli_env(env), cwd=home.parent, timeout=timeout, check=False
    )
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


# --- the repository simulator (connected side, in process) ---------------------------


class Repo:
    """Keys, trust updates, bundles and rollback authorizations, made in process.

    ``key(name)`` makes (once) and saves ``keys/NAME.key|.pub``. Nothing here
    talks to the appliance; an ``Appliance`` applies what the repo makes.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.keydir = root / "keys"
        self.keys: dict[str, PrivateKey] = {}
        self.counter = 0

    def key(self, name: str) -> PrivateKey:
        if name not in self.keys:
            self.keys[name] = PrivateKey.generate()
            save_keypair(self.keys[name], self.keydir, name)
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
        doc = TrustUpdate(version, issued_at or utcnow(), tuple(ops))
        return sign_envelope(TRUST_PAYLOAD_TYPE, doc.to_payload(), [self.key(s) for s in signers])

    def write(self, env: Envelope | bytes, stem: str = "doc") -> Path:
        path = self.fresh(stem).with_suffix(".dsse.json")
        path.write_bytes(env if isinstance(env, bytes) else env.to_bytes())
        return path

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
        src = out.with_name(out.name + ".src")
        src.mkdir(parents=True)
        specs = []
        for i, (ref, data) in enumerate(artifacts.items()):
            name, _, version = ref.partition("@")
            p = src / f"a{i}.bin"
            p.write_bytes(data)
            specs.append(ArtifactSpec(name, version, p, release=(releases or {}).get(name)))
        if tar:
            out = out.with_suffix(".tar")
        now = utcnow()
        manifest = create_bundle(
            out,
            specs,
            stream=stream,
            sequence=sequence,
            keys=[self.key(s) for s in signers],
            expires=expires or now + timedelta(days=30),
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
        env = self.sign(canonical_bytes(doc), signers)
        (bundle_dir / MANIFEST_FILE).write_bytes(env.to_bytes())

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


@dataclass
class Built:
    path: Path
    manifest: Manifest
    contents: dict[str, bytes]

    def file(self, name: str) -> Path:
        art = self.manifest.artifact(name)
        assert art is not None, name
        return self.path / art.files[0].path

    def envelope(self) -> Envelope:
        return Envelope.from_bytes((self.path / MANIFEST_FILE).read_bytes())

    def doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.envelope().payload)
        return doc


def duplicate_signature_envelope(env: Envelope, key: PrivateKey, copies: int) -> Envelope:
    """The same key's signature ``copies`` times (DSSE allows lists; count once)."""
    sig = key.sign(pae(env.payload_type, env.payload))
    return Envelope(
        env.payload_type, env.payload, tuple(Signature(key.keyid, sig) for _ in range(copies))
    )


# --- tars ------------------------------------------------------------------------------

TarExtra = tuple[tarfile.TarInfo, bytes | None]


def member(
    name: str, data: bytes = b"", *, type: bytes = tarfile.REGTYPE, linkname: str = ""
) -> TarExtra:
    info = tarfile.TarInfo(name)
    info.type = type
    info.linkname = linkname
    info.mode = 0o755 if type == tarfile.DIRTYPE else 0o644
    if type in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3
    regular = type in (tarfile.REGTYPE, tarfile.AREGTYPE)
    info.size = len(data) if regular else 0
    return info, (data if regular else None)


def pack_tar(
    bundle_dir: Path, out: Path, extra: Sequence[TarExtra] = (), *, skip: Iterable[str] = ()
) -> Path:
    """Pack a (possibly edited) bundle directory as an uncompressed PAX tar, plus ``extra``.

    Members go in sorted order with their parent directories first; ``skip``
    leaves files out. Symlinks and special files in the directory are packed
    as what they are (``tarfile`` records them as such).
    """
    skipped = set(skip)
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT, encoding="utf-8") as tf:
        for dirpath, dirnames, filenames in os.walk(bundle_dir):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, bundle_dir)
            if rel_dir != ".":
                tf.add(dirpath, arcname=rel_dir, recursive=False)
            for name in sorted(filenames):
                rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                if rel not in skipped:
                    tf.add(os.path.join(dirpath, name), arcname=rel, recursive=False)
        for info, data in extra:
            tf.addfile(info, None if data is None else _bytes_io(data))
    return out


def _bytes_io(data: bytes) -> Any:
    import io

    return io.BytesIO(data)


# --- what a script or responder can see -------------------------------------------


def _blake3_file(path: Path) -> str:
    from bundles.hashing import new_hasher

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


def _trust_view(doc: dict[str, Any]) -> dict[str, Any]:
    # trusted_time is max(clock, floor): the clock moves; the anchor names the home's own
    # place (a copy of a template has its own); everything else must not change
    return {k: v for k, v in doc.items() if k not in ("trusted_time", "ok", "anchor")}


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


def snapshot(home: Path, witness: Path | None = None) -> Snapshot:
    listing, v, trust, events = observe(home, OBSERVED, witness)
    return Snapshot(
        ok(listing)["artifacts"],
        (v.rc, (v.out.get("results"), v.code)),
        _trust_view(ok(trust)),
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


def copy_home(template: Path, dest: Path) -> Path:
    """A fresh home from a prepared template (``cp -a``: modes, times, everything), with
    its own trust anchor (``tests/homecopy.py``)."""
    return homecopy.copy_home(template, dest)


def remove_tree(path: Path) -> None:
    """Remove a tree that may hold 0444 files or read-only folders."""
    for dirpath, dirs, _files in os.walk(path):
        for d in dirs:
            os.chmod(os.path.join(dirpath, d), 0o755)
    os.chmod(path, 0o755)
    shutil.rmtree(path)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


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
    init = ["init", "--root-key", repo.pub("root"), "--site", SITE]
    ok(cli(home, *init, witness=wpath))
    ops: list[Operation] = []
    for stream, names in PUBLISHERS.items():
        ops += [AddKey(repo.key(n).public, "publisher", stream) for n in names]
    ops += [AddKey(repo.key("rb").public, "rollback", None), SetThreshold("publisher", "dual", 2)]
    ok(cli(home, "trust", "apply", repo.write(repo.trust_update(2, ops), "trust"), witness=wpath))
    v3 = repo.trust_update(3, [RevokeKey(repo.key("old").keyid)])
    ok(cli(home, "trust", "apply", repo.write(v3, "trust"), witness=wpath))
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
