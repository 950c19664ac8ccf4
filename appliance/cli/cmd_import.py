"""``appliance import PATH [--dry-run] [--wait]``.

JSON: ``path``, ``stream``, ``sequence``, ``dry_run``, ``signers`` (key ids that
counted), ``artifacts`` (``{name, version, size, digest: {blake3}, status:
new|present}``), ``trust_updates_applied`` (versions), ``bytes_verified``.
"""

from __future__ import annotations

import argparse
from typing import Any

from appliance.cli.context import Context
from appliance.cli.progress import ProgressBar
from appliance.home import Home
from appliance.importer import import_bundle


def register(subs: Any, common: argparse.ArgumentParser) -> None:
    p = subs.add_parser("import", parents=[common], help="verify and import a bundle")
    p.add_argument("path", help="bundle directory or tar file")
    p.add_argument("--dry-run", action="store_true", help="verify only; change nothing")
    p.add_argument("--wait", action="store_true", help="wait for a running import")
    p.set_defaults(func=run_import)


def run_import(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    bar = ProgressBar(ctx.stderr, enabled=not ctx.json)
    try:
        result = import_bundle(
            Home(ctx.home),
            args.path,
            dry_run=args.dry_run,
            wait=args.wait,
            witness_path=ctx.witness,
            progress=bar,
        )
    finally:
        bar.finish()
    verb = "verified (dry run, nothing changed)" if result.dry_run else "imported"
    ctx.say(
        f"{verb} stream {result.stream} sequence {result.sequence}, signed by "
        f"{len(result.signers)} publisher key(s)"
    )
    for a in result.artifacts:
        ctx.say(
            f"  {a['name']}@{a['version']:<12} {a['size']:>14,} B  "
            f"{a['digest']['blake3'][:16]}  {a['status']}"
        )
    if result.trust_updates:
        ctx.say(f"  trust updates applied: {', '.join(map(str, result.trust_updates))}")
    for w in result.warnings:
        ctx.warn(f"appliance: warning: {w}")
    return result.to_dict()
