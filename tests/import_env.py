"""A black-box harness for import tests: a real home, real keys, the real CLI.

``Env`` makes a home with ``appliance init``, a root key, a rollback key and one
publisher key per stream (added by a root-signed trust update applied with
``appliance trust apply``), then builds signed bundles and trust updates in
process (``bundles.writer``) and runs the CLI in a subprocess
(``sys.executable -m appliance --home H --json ...``). ``snapshot`` captures
everything an "unchanged" assertion compares.

The conformance style of tuf-conformance and python-tuf's repository
simulator: build a signed input with one thing changed, run the real command,
assert the exact error code and that local state did not move.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import homecopy

from bundles.documents import TRUST_PAYLOAD_TYPE, AddKey, Operation, TrustUpdate
from bundles.dsse import Envelope, sign_envelope
from bundles.keys import PrivateKey, save_keypair
from bundles.manifest import Manifest
from bundles.timeutil import utcnow
from bundles.writer import ArtifactSpec, create_bundle

REPO = Path(__file__).resolve().parent.parent
CLI_TIMEOUT = 120.0

Json = dict[str, Any]


def cli_env() -> dict[str, str]:
    """The environment for CLI subprocesses: this checkout first on the path, no witness."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.pop("APPLIANCE_WITNESS", None)
    env.pop("APPLIANCE_HOME", None)
    return env


def cli_argv(home: Path, *args: str | os.PathLike[str]) -> list[str]:
    return [sys.executable, "-m", "appliance", "--home", str(home), "--json", *map(str, args)]


def parse_output(rc: int, out: str, err: str, argv: Sequence[str]) -> Json:
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


def run_cli(home: Path, *args: str | os.PathLike[str]) -> tuple[int, Json]:
    """Run ``appliance --home HOME --json ARGS`` and return (exit code, JSON object)."""
    argv = cli_argv(home, *args)
    proc = subprocess.run(
        argv, capture_output=True, text=True, env=cli_env(), timeout=CLI_TIMEOUT, check=False
    )
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
    from appliance.cli.main import run

    argv = ["--home", str(home), "--json", *map(str, args)]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = run(argv)
    return rc, parse_output(rc, out.getvalue(), err.getvalue(), argv)


def error_code(doc: Json) -> str | None:
    err = doc.get("error")
    return err.get("code") if isinstance(err, dict) else None


# --- state snapshots ----------------------------------------------------------


def object_files(home: Path) -> list[tuple[str, int, str]]:
    """Every file under objects/: (relative path, size, mode), sorted; links are flagged."""
    out: list[tuple[str, int, str]] = []
    root = home / "objects"
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            p = Path(dirpath) / name
            st = p.lstat()
            out.append((str(p.relative_to(root)), st.st_size, stat.filemode(st.st_mode)))
    return sorted(out)


def staging_files(home: Path) -> list[str]:
    staging = home / "staging"
    return sorted(os.listdir(staging)) if staging.is_dir() else []


def stable_trust(doc: Json) -> Json:
    """``trust show`` without what moves by itself (trusted time follows the clock)."""
    return {k: v for k, v in doc.items() if k not in ("trusted_time", "ok", "anchor")}


def stable_list(doc: Json) -> list[Json]:
    """``list`` records without the import timestamp (differs between equal runs)."""
    return [{k: v for k, v in a.items() if k != "imported_at"} for a in doc["artifacts"]]


@dataclass(frozen=True)
class Snapshot:
    listing: Json
    verify: Json
    verify_rc: int
    objects: list[tuple[str, int, str]]
    trust: Json
    events: list[Json] = field(compare=False)

    @property
    def audit_seq(self) -> int:
        return int(self.events[-1]["seq"]) if self.events else 0

    def events_after(self, earlier: Snapshot) -> list[Json]:
        return [e for e in self.events if e["seq"] > earlier.audit_seq]

    def store_part(self) -> tuple[Json, Json, int, list[tuple[str, int, str]]]:
        return self.listing, self.verify, self.verify_rc, self.objects


def snapshot(home: Path, *, in_process: bool = True) -> Snapshot:
    """``list``, ``verify``, ``trust show`` and the audit log, and the files under objects/.

    The four read-only commands go through the CLI entry point in this process
    (no interpreter start-up each); the command under test always runs as a
    real subprocess (``run_cli``). ``in_process=False`` runs them as subprocesses too.
    """
    commands = [["list"], ["verify"], ["trust", "show"], ["audit", "show", "--limit", "0"]]
    if in_process:
        results = [run_in_process(home, *c) for c in commands]
    else:
        results = run_many(home, commands)
    (lrc, listing), (vrc, verify), (trc, trust), (arc, audit) = results
    assert lrc == 0, listing
    assert trc == 0, trust
    assert arc == 0, audit
    return Snapshot(listing, verify, vrc, object_files(home), stable_trust(trust), audit["events"])


# --- keys, trust updates, bundles ----------------------------------------------


def sign_trust_update(
    version: int,
    ops: Sequence[Operation],
    keys: Iterable[PrivateKey],
    issued_at: datetime | None = None,
) -> bytes:
    doc = TrustUpdate(version, (issued_at or utcnow()).replace(microsecond=0), tuple(ops))
    return sign_envelope(TRUST_PAYLOAD_TYPE, doc.to_payload(), list(keys)).to_bytes()


def tar_directory(src: Path, out: Path) -> Path:
    """An uncompressed PAX tar of a bundle directory, members in sorted order."""
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tf:
        for dirpath, dirs, files in os.walk(src):
            dirs.sort()
            rel_dir = Path(dirpath).relative_to(src)
            if str(rel_dir) != ".":
                info = tarfile.TarInfo(rel_dir.as_posix())
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tf.addfile(info)
            for name in sorted(files):
                p = Path(dirpath) / name
                info = tarfile.TarInfo((rel_dir / name).as_posix())
                info.size = p.stat().st_size
                info.mode = 0o644
                with open(p, "rb") as f:
                    tf.addfile(info, f)
    return out


@dataclass
class Env:
    """A prepared home with keys; every path lives under ``work``."""

    work: Path
    site: str | None = None
    streams: tuple[str, ...] = ("models",)
    home: Path = field(init=False)
    keys_dir: Path = field(init=False)
    root: PrivateKey = field(init=False)
    rollback: PrivateKey = field(init=False)
    publishers: dict[str, PrivateKey] = field(init=False)
    trust_version: int = field(init=False, default=1)
    initial_update: Path = field(init=False)
    _count: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.home = self.work / "home"
        self.keys_dir = self.work / "keys"
        self.root = self.new_key("root")
        self.rollback = self.new_key("rollback")
        self.publishers = {s: self.new_key(f"publisher-{s}") for s in self.streams}
        args = ["init", "--root-key", self.keys_dir / "root.pub"]
        if self.site:
            args += ["--site", self.site]
        self.expect_ok(*args)
        ops: list[Operation] = [AddKey(self.rollback.public, "rollback", None)]
        ops += [AddKey(k.public, "publisher", s) for s, k in self.publishers.items()]
        self.initial_update = self.apply_trust(ops)

    def clone(self, work: Path) -> Env:
        """A copy of this environment (home, keys, files) under ``work``: cheap per-test setup."""
        shutil.copytree(self.work, work, symlinks=True)
        homecopy.rebind_anchor(self.home, work / "home")
        new = copy.copy(self)
        new.work = work
        new.home = work / "home"
        new.keys_dir = work / "keys"
        new.publishers = dict(self.publishers)
        new.initial_update = work / self.initial_update.relative_to(self.work)
        return new

    # keys and files
    def new_key(self, name: str) -> PrivateKey:
        key = PrivateKey.generate()
        save_keypair(key, self.keys_dir, name)
        return key

    def path(self, stem: str) -> Path:
        self._count += 1
        return self.work / f"{self._count:03d}-{stem}"

    # the CLI
    def run(self, *args: str | os.PathLike[str]) -> tuple[int, Json]:
        return run_cli(self.home, *args)

    def expect_ok(self, *args: str | os.PathLike[str]) -> Json:
        rc, doc = self.run(*args)
        assert rc == 0 and doc["ok"] is True, (args, rc, doc)
        return doc

    def expect_refusal(self, code: str, *args: str | os.PathLike[str], exit_code: int = 1) -> Json:
        rc, doc = self.run(*args)
        assert (rc, doc["ok"], error_code(doc)) == (exit_code, False, code), (args, rc, doc)
        assert doc["exit_code"] == exit_code
        return doc

    def snapshot(self) -> Snapshot:
        return snapshot(self.home)

    def audit_events(self) -> list[Json]:
        doc = self.expect_ok("audit", "show", "--limit", "0")
        events: list[Json] = doc["events"]
        return events

    def audit_seq(self) -> int:
        events = self.audit_events()
        return int(events[-1]["seq"]) if events else 0

    def events_since(self, seq: int) -> list[Json]:
        return [e for e in self.audit_events() if e["seq"] > seq]

    # trust updates
    def trust_update(
        self,
        ops: Sequence[Operation],
        *,
        version: int | None = None,
        keys: Sequence[PrivateKey] | None = None,
        issued_at: datetime | None = None,
    ) -> Path:
        """Write a trust update file (default: next version, signed by the root)."""
        v = self.trust_version + 1 if version is None else version
        data = sign_trust_update(v, ops, keys if keys is not None else [self.root], issued_at)
        path = self.path(f"trust-v{v}.dsse.json")
        path.write_bytes(data)
        return path

    def apply_trust(self, ops: Sequence[Operation], **kw: Any) -> Path:
        path = self.trust_update(ops, **kw)
        doc = self.expect_ok("trust", "apply", path)
        self.trust_version = int(doc["version"])
        return path

    # bundles
    def bundle(
        self,
        artifacts: dict[str, bytes] | Sequence[tuple[str, bytes]],
        *,
        stream: str = "models",
        sequence: int = 1,
        keys: Sequence[PrivateKey] | None = None,
        expires: datetime | None = None,
        issued_at: datetime | None = None,
        sites: Sequence[str] = (),
        trust_updates: Sequence[bytes | Path] = (),
        tar: bool = False,
        part_size: int | None = None,
        releases: dict[str, int] | None = None,
    ) -> Path:
        """A signed bundle of ``NAME@VERSION -> bytes`` (in that manifest order)."""
        items = list(artifacts.items()) if isinstance(artifacts, dict) else list(artifacts)
        src = self.path("src")
        src.mkdir()
        specs = []
        for i, (ref, data) in enumerate(items):
            name, _, version = ref.partition("@")
            f = src / f"{i:02d}-{name}.bin"
            f.write_bytes(data)
            rel = (releases or {}).get(ref)
            specs.append(ArtifactSpec(name, version or "1", f, release=rel))
        out = self.path("bundle.tar" if tar else "bundle")
        create_bundle(
            out,
            specs,
            stream=stream,
            sequence=sequence,
            keys=list(keys) if keys is not None else [self.publishers[stream]],
            expires=expires or utcnow() + timedelta(days=30),
            issued_at=issued_at,
            sites=sites,
            any_site=not sites,
            trust_updates=[t.read_bytes() if isinstance(t, Path) else t for t in trust_updates],
            tar=tar,
            part_size=part_size,
        )
        shutil.rmtree(src)
        return out

    def import_ok(self, bundle: Path) -> Json:
        return self.expect_ok("import", bundle)


def manifest_of(bundle: Path) -> Manifest:
    """The manifest a bundle directory claims (unverified; tests know what they wrote)."""
    env = Envelope.from_bytes((bundle / "manifest.dsse.json").read_bytes())
    return Manifest.from_payload(env.payload)
