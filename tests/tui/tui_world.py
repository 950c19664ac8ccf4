"""A small, deterministic appliance world for the TUI tests and the latency bench.

Keys come from fixed seeds, artifacts from fixed bytes and, when ``frozen``
is given, every clock in ``appliance``/``bundles``/``tui`` reads that fixed
time: the same world gives the same key ids, digests, signatures, audit time
stamps and so the same screenshots.

The world: a home (site ``site-a``) trusting a root key, a publisher of stream
``models`` and a rollback key (trust v2); ``models`` #1 and #2 imported
(``llm-weights`` 1.0 then 1.1, ``tokenizer`` 1.0); media holding a good bundle
(#3), the replayed #2, one for another site (#4), one with a tampered artifact
(#5), and rollback authorizations (a valid one and one signed by the publisher).
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import bundles.timeutil
from appliance.home import Home
from appliance.importer import import_bundle
from appliance.initialize import init_home
from appliance.rollback import authorize_rollback
from bundles.documents import AddKey
from bundles.keys import PrivateKey

# tests/, where the one test simulator lives: on the path under pytest already, not when
# bench/tui_latency.py imports this file
if (_TESTS := str(Path(__file__).resolve().parents[1])) not in sys.path:
    sys.path.append(_TESTS)

from conformance.driver import (
    apply_trust,
    copy_world,
    seeded_key,
    trust_envelope,
    write_bundle,
    write_sources,
)

# seeded_key: the deterministic keys the TUI tests and bench/tui_latency.py take from here
__all__ = [
    "FIXED_NOW",
    "SITE",
    "STREAM",
    "World",
    "build_world",
    "data",
    "frozen_clock",
    "seeded_key",
]

FIXED_NOW = datetime(2026, 3, 2, 9, 30, 0, tzinfo=UTC)
STREAM = "models"
SITE = "site-a"


def data(label: str, size: int) -> bytes:
    """``size`` deterministic bytes."""
    unit = (label.encode() + b"\x00") * 8
    return (unit * (size // len(unit) + 1))[:size]


@contextlib.contextmanager
def frozen_clock(now: datetime) -> Iterator[None]:
    """Every ``utcnow`` imported by our packages returns ``now``; restored after."""
    import appliance.audit
    import appliance.history
    import appliance.importer
    import appliance.initialize
    import appliance.rollback
    import appliance.truststore
    import appliance.witness  # noqa: F401
    import bundles.writer

    original = bundles.timeutil.utcnow

    def fake() -> datetime:
        return now

    patched: list[types.ModuleType] = []
    for name, mod in list(sys.modules.items()):
        if name.split(".")[0] in ("appliance", "bundles", "tui") and mod is not None:
            if getattr(mod, "utcnow", None) is original:
                mod.utcnow = fake  # type: ignore[attr-defined]
                patched.append(mod)
    try:
        yield
    finally:
        for mod in patched:
            mod.utcnow = original  # type: ignore[attr-defined]


@dataclass
class World:
    base: Path
    home: Home
    media: Path
    root: PrivateKey
    publisher: PrivateKey
    rollback: PrivateKey
    now: datetime
    bundles: dict[str, Path] = field(default_factory=dict)
    auths: dict[str, Path] = field(default_factory=dict)

    def make_bundle(
        self,
        out: Path,
        artifacts: dict[str, bytes],
        sequence: int,
        *,
        sites: tuple[str, ...] = (),
        keys: list[PrivateKey] | None = None,
        tar: bool = False,
    ) -> Path:
        specs = write_sources(
            self.base / "src" / out.name, artifacts, file_name="{name}-{version}.bin"
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        write_bundle(
            out,
            specs,
            keys or [self.publisher],
            stream=STREAM,
            sequence=sequence,
            expires=self.now + timedelta(days=30),
            issued_at=self.now - timedelta(hours=1),
            sites=sites,
            tar=tar,
        )
        return out

    def import_(self, path: Path) -> None:
        import_bundle(self.home, path)

    def copy_to(self, base: Path) -> World:
        """The same world at another place (nothing in the store records these paths)."""

        def moved(p: Path) -> Path:
            return base / p.relative_to(self.base)

        home = copy_world(self.base, base, self.home.root)  # with its own trust anchor
        return World(
            base,
            Home(home),
            moved(self.media),
            self.root,
            self.publisher,
            self.rollback,
            self.now,
            {k: moved(v) for k, v in self.bundles.items()},
            {k: moved(v) for k, v in self.auths.items()},
        )


def build_world(base: Path, *, frozen: datetime | None = None, big: int = 0) -> World:
    """Build the world under ``base`` (emptied first). ``big``: bytes of an extra bundle."""
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    ctx: contextlib.AbstractContextManager[None] = (
        frozen_clock(frozen) if frozen else contextlib.nullcontext()
    )
    with ctx:
        return _build(base, frozen or bundles.timeutil.utcnow(), big)


def _build(base: Path, now: datetime, big: int) -> World:
    root, publisher, rollback = seeded_key(1), seeded_key(2), seeded_key(3)
    home = Home(base / "home")
    init_home(home, [root.public], site=SITE)
    ops = (AddKey(publisher.public, "publisher", STREAM), AddKey(rollback.public, "rollback", None))
    apply_trust(home, trust_envelope(2, ops, [root], now - timedelta(days=1)), source="tests")
    media = base / "media"
    media.mkdir()
    w = World(base, home, media, root, publisher, rollback, now)
    first = w.make_bundle(
        base / "shipped" / "models-1",
        {"llm-weights@1.0": data("w10", 300_000), "tokenizer@1.0": data("tok", 20_000)},
        1,
    )
    w.import_(first)
    w.bundles["replay"] = w.make_bundle(
        media / "models-2", {"llm-weights@1.1": data("w11", 310_000)}, 2
    )
    w.import_(w.bundles["replay"])
    w.bundles["good"] = w.make_bundle(
        media / "models-3",
        {
            "llm-weights@1.2": data("w12", 2_500_000),
            "tokenizer@1.1": data("tok11", 21_000),
            "config@1.0": data("cfg", 900),
        },
        3,
    )
    w.bundles["wrong_site"] = w.make_bundle(
        media / "models-4-site-b", {"config@2.0": data("cfg2", 800)}, 4, sites=("site-b",)
    )
    tampered = w.make_bundle(media / "models-5-tampered", {"config@3.0": data("cfg3", 1000)}, 5)
    victim = next((tampered / "artifacts").glob("config@3.0_*"))
    raw = bytearray(victim.read_bytes())
    raw[10] ^= 0x01
    victim.chmod(0o644)
    victim.write_bytes(bytes(raw))
    w.bundles["tampered"] = tampered
    if big:
        w.bundles["big"] = w.make_bundle(
            base / "bigmedia" / "models-9-big", {"big-model@9.0": data("big", big)}, 9
        )
    w.auths["valid"] = _authorize(w, "rollback-llm-weights.json", [rollback], "1.1 regressed")
    w.auths["publisher"] = _authorize(
        w, "rollback-by-publisher.json", [publisher], "signed by the wrong role"
    )
    return w


def _authorize(w: World, name: str, keys: list[PrivateKey], reason: str) -> Path:
    out = w.media / name
    import secrets as rb_secrets

    token: Callable[[int], str] = getattr(rb_secrets, "token_hex")  # noqa: B009
    setattr(rb_secrets, "token_hex", lambda n=16: (name.encode().hex() * 4)[: 2 * n])  # noqa: B010
    try:
        authorize_rollback(
            out,
            "llm-weights",
            "1.0",
            keys,
            reason=reason,
            issued_at=w.now - timedelta(minutes=5),
            expires=w.now + timedelta(days=7),
        )
    finally:
        setattr(rb_secrets, "token_hex", token)  # noqa: B010
    return out
