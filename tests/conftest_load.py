"""Helpers for the load, rollback, history and witness tests: a small signed site.

``make_site`` builds a home with root, publisher (stream ``models``) and
rollback keys, and ``Site.ship`` signs and imports bundles through the real
writer and importer. ``Site.cli`` runs the real CLI in a subprocess. A scenario
on the primitives of ``tests/conformance/driver.py``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conformance.driver import (
    apply_trust,
    make_key,
    run_appliance,
    trust_envelope,
    write_bundle,
    write_sources,
)

from appliance.home import Home
from appliance.importer import import_bundle
from appliance.initialize import init_home
from bundles.documents import AddKey, RevokeKey
from bundles.keys import PrivateKey

STREAM = "models"


@dataclass
class Site:
    tmp: Path
    home: Path
    keydir: Path
    media: Path
    witness: Path | None
    root: PrivateKey
    publisher: PrivateKey
    rollback: PrivateKey
    trust_version: int = 2
    sequence: int = 0
    bundles: dict[int, Path] = field(default_factory=dict)

    @property
    def h(self) -> Home:
        return Home(self.home)

    def bundle(
        self,
        artifacts: dict[str, bytes],
        *,
        sequence: int | None = None,
        trust_updates: tuple[bytes, ...] = (),
    ) -> Path:
        """Sign a bundle of NAME@VERSION -> bytes onto the media folder (not imported)."""
        seq = sequence if sequence is not None else self.sequence + 1
        self.sequence = max(self.sequence, seq)
        specs = write_sources(self.tmp / f"src{seq}", artifacts, file_name="a{i}")
        out = self.media / f"bundle-{seq}"
        write_bundle(
            out,
            specs,
            [self.publisher],
            stream=STREAM,
            sequence=seq,
            any_site=True,
            trust_updates=trust_updates,
        )
        self.bundles[seq] = out
        return out

    def ship(self, artifacts: dict[str, bytes]) -> Path:
        out = self.bundle(artifacts)
        import_bundle(self.h, out, witness_path=self.witness)
        return out

    def trust_update(self, *ops: Any) -> bytes:
        self.trust_version += 1
        return trust_envelope(self.trust_version, ops, [self.root]).to_bytes()

    def revoke(self, key: PrivateKey) -> Path:
        path = self.tmp / f"trust-{self.trust_version + 1}.json"
        path.write_bytes(self.trust_update(RevokeKey(key.keyid)))
        return path

    def cli(self, *args: str | os.PathLike[str], check: int | None = None) -> Result:
        p = run_appliance("--home", self.home, *args, cwd=self.tmp, timeout=60)
        res = Result(p.returncode, p.stdout, p.stderr.decode(errors="replace"))
        if check is not None:
            assert res.code == check, (res.code, res.stderr, res.stdout[:500])
        return res


@dataclass
class Result:
    code: int
    stdout: bytes
    stderr: str

    @property
    def json(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.stdout)
        return doc


def witnessed_site(tmp: Path) -> tuple[Site, Path]:
    """A site with a witness and ``model@1.0`` (``b"one"``) imported: the site and the
    witness's path."""
    site = make_site(tmp, witness=True)
    site.ship({"model@1.0": b"one"})
    assert site.witness is not None
    return site, site.witness


def make_site(tmp: Path, *, witness: bool = False) -> Site:
    keydir = tmp / "keys"
    keys = {n: make_key(keydir, n) for n in ("root", "publisher", "rollback")}
    media = tmp / "media"
    media.mkdir()
    home = tmp / "home"
    wpath = tmp / "witness" / "w.json" if witness else None
    init_home(Home(home), [keys["root"].public], 1, "site-a", wpath)
    site = Site(
        tmp, home, keydir, media, wpath, keys["root"], keys["publisher"], keys["rollback"], 1
    )
    env = site.trust_update(
        AddKey(keys["publisher"].public, "publisher", STREAM),
        AddKey(keys["rollback"].public, "rollback", None),
    )
    apply_trust(home, env, witness=wpath)
    return site
