"""``appliance demo [--tui]``: the whole story in a throwaway home (see ``appliance.demo``).

Exit 0 only when every step behaved as expected (each "should be refused"
step refused with the expected code); otherwise exit 3 ``demo_failed``.
JSON: ``passed`` (bool), ``home`` and ``media`` (temporary paths, removed
afterwards), ``steps`` (each ``{step, title, expected, outcome, ok,
detail}``; ``expected`` and ``outcome`` are ``ok`` or an error code).
``--tui`` then opens the TUI on the demo's home and media (not with ``--json``).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from appliance.cli.context import Context
from appliance.demo import run_demo
from appliance.errors import DemoFailedError
from bundles.errors import UsageError


def register(subs: Any, common: argparse.ArgumentParser) -> None:
    p = subs.add_parser("demo", parents=[common], help="the whole story in a throwaway home")
    p.add_argument("--tui", action="store_true", help="then open the TUI on the demo's home")
    p.set_defaults(func=run)


def _open_tui(home: Path, media: Path, witness: Path) -> int:
    from tui import run_app  # lazy: only --tui imports textual

    return run_app(home=home, media=[media], witness=witness)


def run(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    if args.tui and ctx.json:
        raise UsageError("--tui and --json do not go together")
    with tempfile.TemporaryDirectory(prefix="appliance-demo-") as tmp:
        result = run_demo(Path(tmp), ctx.say)
        out = result.to_dict()
        if not result.ok:
            ctx.extra = out
            failed = [s for s in result.steps if not s.ok]
            raise DemoFailedError(
                f"demo step {failed[0].number} ({failed[0].title}) did not behave as expected: "
                f"expected {failed[0].expected}, got {failed[0].outcome}",
            )
        ctx.say(f"demo passed: all {len(result.steps)} steps behaved as expected")
        if args.tui:
            _open_tui(result.home, result.media, result.witness)
    return out
