"""The import tests' scenario: a real home, real keys, the real CLI.

``Env`` makes a home with ``appliance init``, a root key, a rollback key and one
publisher key per stream (added by a root-signed trust update applied with
``appliance trust apply``), then builds signed bundles and trust updates in
process and runs the CLI in a subprocess; ``snapshot`` captures everything an
"unchanged" assertion compares. Every piece is a primitive of the one test
simulator, ``tests/conformance/driver.py``; this module only composes them.

The conformance style of tuf-conformance and python-tuf's repository
simulator: build a signed input with one thing changed, run the real command,
assert the exact error code and that local state did not move.
"""

from __future__ import annotations

import copy
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from conformance.driver import (
    OBSERVED,
    Json,
    copy_world,
    error_code,
    make_key,
    object_files,
    run_cli,
    run_in_process,
    stable_trust,
    trust_envelope,
    write_bundle,
    write_sources,
)

from bundles.documents import AddKey, Operation
from bundles.keys import PrivateKey


@dataclass(frozen=True)
class Snapshot:
    listing: Json
    verify: Json
    verify_rc: int
    objects: dict[str, tuple[int, int, str]]
    trust: Json
    events: list[Json] = field(compare=False)

    @property
    def audit_seq(self) -> int:
        return int(self.events[-1]["seq"]) if self.events else 0

    def events_after(self, earlier: Snapshot) -> list[Json]:
        return [e for e in self.events if e["seq"] > earlier.audit_seq]

    def store_part(self) -> tuple[Json, Json, int, dict[str, tuple[int, int, str]]]:
        return self.listing, self.verify, self.verify_rc, self.objects


def snapshot(home: Path) -> Snapshot:
    """``list``, ``verify``, ``trust show`` and the audit log, and the files under objects/.

    The four read-only commands go through the CLI entry point in this process
    (no interpreter start-up each); the command under test always runs as a
    real subprocess (``run_cli``).
    """
    results = [run_in_process(home, *c) for c in OBSERVED]
    (lrc, listing), (vrc, verify), (trc, trust), (arc, audit) = results
    assert lrc == 0, listing
    assert trc == 0, trust
    assert arc == 0, audit
    return Snapshot(listing, verify, vrc, object_files(home), stable_trust(trust), audit["events"])


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
        new = copy.copy(self)
        new.home = copy_world(self.work, work, self.home)
        new.work = work
        new.keys_dir = work / "keys"
        new.publishers = dict(self.publishers)
        new.initial_update = work / self.initial_update.relative_to(self.work)
        return new

    # keys and files
    def new_key(self, name: str) -> PrivateKey:
        return make_key(self.keys_dir, name)

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
        env = trust_envelope(v, ops, keys if keys is not None else [self.root], issued_at)
        path = self.path(f"trust-v{v}.dsse.json")
        path.write_bytes(env.to_bytes())
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
        src = self.path("src")
        specs = write_sources(
            src, artifacts, file_name="{i:02d}-{name}.bin", default_version="1", releases=releases
        )
        out = self.path("bundle.tar" if tar else "bundle")
        write_bundle(
            out,
            specs,
            list(keys) if keys is not None else [self.publishers[stream]],
            stream=stream,
            sequence=sequence,
            expires=expires,
            issued_at=issued_at,
            sites=sites,
            trust_updates=trust_updates,
            tar=tar,
            part_size=part_size,
        )
        shutil.rmtree(src)
        return out

    def import_ok(self, bundle: Path) -> Json:
        return self.expect_ok("import", bundle)
