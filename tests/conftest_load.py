"""Helpers for the load, rollback, history and witness tests: a small signed site.

``make_site`` builds a home with root, publisher (stream ``models``) and
rollback keys, and ``Site.ship`` signs and imports bundles through the real
writer and importer. ``Site.cli`` runs the real CLI in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from appliance.home import Home
from appliance.importer import apply_trust_envelope, import_bundle
from appliance.initialize import init_home
from appliance.truststore import load_trust
from bundles.documents import TRUST_PAYLOAD_TYPE, AddKey, RevokeKey, TrustUpdate
from bundles.dsse import sign_envelope
from bundles.keys import PrivateKey, save_keypair
from bundles.timeutil import utcnow
from bundles.writer import ArtifactSpec, create_bundle

REPO = Path(__file__).resolve().parent.parent
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
        src = self.tmp / f"src{seq}"
        src.mkdir(exist_ok=True)
        specs = []
        for i, (ref, data) in enumerate(artifacts.items()):
            name, _, version = ref.partition("@")
            p = src / f"a{i}"
            p.write_bytes(data)
            specs.append(ArtifactSpec(name, version, p))
        out = self.media / f"bundle-{seq}"
        create_bundle(
            out,
            specs,
            stream=STREAM,
            sequence=seq,
            keys=[self.publisher],
            expires=utcnow() + timedelta(days=30),
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
        update = TrustUpdate(self.trust_version, utcnow(), tuple(ops))
        return sign_envelope(TRUST_PAYLOAD_TYPE, update.to_payload(), [self.root]).to_bytes()

    def revoke(self, key: PrivateKey) -> Path:
        path = self.tmp / f"trust-{self.trust_version + 1}.json"
        path.write_bytes(self.trust_update(RevokeKey(key.keyid)))
        return path

    def cli(self, *args: str | os.PathLike[str], check: int | None = None) -> Result:
        cmd = [sys.executable, "-m", "appliance", "--home", str(self.home), *map(str, args)]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        env.pop("APPLIANCE_WITNESS", None)
        p = subprocess.run(cmd, capture_output=True, env=env, cwd=self.tmp, timeout=60)
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


def make_site(tmp: Path, *, witness: bool = False) -> Site:
    keydir = tmp / "keys"
    keys = {n: PrivateKey.generate() for n in ("root", "publisher", "rollback")}
    for n, k in keys.items():
        save_keypair(k, keydir, n)
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
    from bundles.dsse import Envelope

    db = site.h.db()
    apply_trust_envelope(db, load_trust(db), Envelope.from_bytes(env), "test")
    if wpath is not None:
        from appliance import witness as w

        w.refresh(db, wpath)
    db.conn.close()
    return site
