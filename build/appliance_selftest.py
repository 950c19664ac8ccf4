"""Self-test of the frozen binary: is everything it needs inside it?

Run as ``APPLIANCE_SELFTEST=1 appliance``. It prints one JSON object and exits 0
when every check passed, 1 otherwise. ``APPLIANCE_SELFTEST=tui appliance`` shows
a small textual app on the real terminal instead (ctrl+q or q quits, exit 0).
It touches no appliance state; it writes only a scratch sqlite database under
the temporary directory.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import tempfile
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def _hash_in_worker(data: bytes) -> str:
    import blake3

    return str(blake3.blake3(data).hexdigest())


def _check_blake3() -> str:
    import blake3

    want = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
    got = blake3.blake3(b"").hexdigest()
    assert got == want, got
    return f"blake3 {blake3.__version__}"


def _check_cryptography() -> str:
    import cryptography
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    key.public_key().verify(key.sign(b"x"), b"x")
    return f"cryptography {cryptography.__version__}"


def _check_sqlite() -> str:
    import sqlite3

    from appliance.db import connect

    with tempfile.TemporaryDirectory() as tmp:
        db = connect(Path(tmp) / "t.db", create=True)
        db.execute("INSERT INTO meta (key, value) VALUES ('selftest', '1')")
        count = db.execute("SELECT count(*) FROM meta WHERE key = 'selftest'").fetchone()[0]
        db.conn.close()
    assert count == 1
    return f"sqlite {sqlite3.sqlite_version}"


def _check_process_pool() -> str:
    with ProcessPoolExecutor(max_workers=2) as pool:
        digests = list(pool.map(_hash_in_worker, [b"a", b"b", b"a"]))
    assert digests[0] == digests[2] != digests[1], digests
    return "2 worker processes"


def _check_process_pool_spawn() -> str:
    # A spawned worker is this executable run again: only the entry's
    # multiprocessing.freeze_support() turns it into a worker instead of a CLI run.
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=ctx) as pool:
        digests = list(pool.map(_hash_in_worker, [b"a", b"b"]))
    assert digests[0] != digests[1], digests
    return "2 spawned worker processes"


def _check_media_scanner() -> str:
    # The TUI's media polls run in a child, forked at start-up and spawned when other
    # threads run (tui.scanner): both must work in the frozen binary.
    from appliance.home import Home
    from tui.scanner import MediaScanner

    for method in ("fork", "spawn"):
        with tempfile.TemporaryDirectory() as tmp:
            scanner = MediaScanner(Home(Path(tmp) / "home"), [Path(tmp)], False, method=method)
            try:
                poll = scanner.poll()
            finally:
                scanner.close()
        assert scanner.started == [method], scanner.started
        assert [m.bundles for m in poll.media] == [()], poll
        assert poll.problem is None or poll.problem.code != "io_error", poll.problem
    return "forked and spawned media scanner children answered"


def _check_packages() -> str:
    names = ["appliance.cli", "bundles.keys", "bundles.dsse", "bundles.manifest", "rfc8785"]
    for name in names:
        importlib.import_module(name)
    return ", ".join(names)


def _check_textual() -> str:
    import textual
    from textual.app import App
    from textual.css.stylesheet import Stylesheet

    # The tui's stylesheets use the theme's variables ($text-accent, ...).
    sheet = Stylesheet(variables=App[None]().get_css_variables())
    count = 0
    tui_dir = Path(getattr(sys, "_MEIPASS", "")) / "tui"
    for path in sorted(tui_dir.glob("**/*.tcss")):
        sheet.read(path)
        count += 1
    sheet.parse()

    class _Probe(App[None]):
        def on_mount(self) -> None:
            self.exit()

    _Probe().run(headless=True, size=(80, 24))
    return f"textual {textual.__version__}, {count} tui stylesheets parsed, headless app ran"


CHECKS: list[tuple[str, Callable[[], str]]] = [
    ("blake3", _check_blake3),
    ("cryptography", _check_cryptography),
    ("sqlite", _check_sqlite),
    ("process_pool", _check_process_pool),
    ("process_pool_spawn", _check_process_pool_spawn),
    ("media_scanner", _check_media_scanner),
    ("packages", _check_packages),
    ("textual", _check_textual),
]


def _interactive_app() -> int:
    from textual.app import App, ComposeResult
    from textual.binding import Binding
    from textual.widgets import Footer, Header, Static

    class SelfTestApp(App[int]):
        TITLE = "appliance self-test"
        BINDINGS = [Binding("ctrl+q", "quit", "Quit"), Binding("q", "quit", "Quit")]

        def compose(self) -> ComposeResult:
            yield Header()
            yield Static("The frozen binary runs textual on this terminal. Press q to quit.")
            yield Footer()

    SelfTestApp().run()
    return 0


def selftest(mode: str = "1") -> int:
    if mode == "tui":
        return _interactive_app()
    results: dict[str, dict[str, object]] = {}
    for name, check in CHECKS:
        try:
            results[name] = {"ok": True, "detail": check()}
        except Exception as e:  # noqa: BLE001 - every failure is reported, none hidden
            results[name] = {"ok": False, "detail": f"{type(e).__name__}: {e}"}
            traceback.print_exc(file=sys.stderr)
    ok = all(bool(r["ok"]) for r in results.values())
    report = {
        "ok": ok,
        "frozen": bool(getattr(sys, "frozen", False)),
        "tmp": os.environ.get("TMPDIR", ""),
        "checks": results,
    }
    print(json.dumps(report, sort_keys=True))
    return 0 if ok else 1
