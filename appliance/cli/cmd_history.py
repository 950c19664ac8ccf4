"""``appliance history NAME``: imports, pointer moves, who authorized them, loads, refusals.

JSON (see ``appliance.history``): ``name``, ``active`` (version or null),
``versions`` (store records as in ``list``), ``events`` in chain order (each
``{seq, ts, trusted_time, type, outcome, code, version, summary, signers,
labels, reason, from_version, to_version, authorization_id, digest, loader,
detail}``; ``type`` is ``import``, ``rollback``, ``load``, ...; ``labels`` maps
each signer to its root-signed label; ``loader`` says who loaded, for load
events). An artifact the store and the audit log have never seen: exit 2
``not_found``. An audit detail that is not a JSON object: exit 4
``audit_chain_broken``.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from appliance.cli.context import Context
from appliance.history import artifact_history
from appliance.home import Home
from bundles.errors import NotFoundError, UsageError
from bundles.timeutil import parse_iso


def register(subs: Any, common: argparse.ArgumentParser) -> None:
    p = subs.add_parser("history", parents=[common], help="what happened to an artifact")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--at", metavar="ISO8601", help="what was active then (from the audit log)")
    p.set_defaults(func=run_history)


def parse_at(value: str | None) -> datetime | None:
    """``--at``: ISO 8601 (no zone means UTC)."""
    if value is None:
        return None
    try:
        return parse_iso(value)
    except ValueError as e:
        raise UsageError(f"--at {value!r}: {e}") from e


def run_history(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    db = Home(ctx.home).db()
    try:
        hist = artifact_history(db, args.name, parse_at(args.at))
    finally:
        db.conn.close()
    if not hist["versions"] and not hist["events"]:
        raise NotFoundError(f"no artifact named {args.name!r} in the store or the audit log")
    when = f" at {hist['at']}" if hist["at"] else ""
    ctx.say(f"{args.name}: active version{when} {hist['active'] or 'none'}")
    for r in hist["versions"]:
        mark = "*" if r["active"] else " "
        ctx.say(f"  {mark} {r['version']:<14} {r['digest']['blake3'][:16]}  seq {r['sequence']}")
    for e in hist["events"]:
        mark = "" if e["verified"] else "  [UNVERIFIED: after a break in the audit chain]"
        clock = f" (system clock {e['detail']['clock']})" if "clock" in e["detail"] else ""
        trusted = e["trusted_time"] or "unknown"
        ctx.say(f"{e['seq']:>6} {e['ts']} trusted {trusted}{clock} {e['summary']}{mark}")
    if hist["labels_error"] is not None:
        ctx.warn(f"appliance: warning: {hist['labels_error']}")
    if hist["unvouched_from"] is not None:
        ctx.warn(
            f"appliance: warning: the audit chain is broken at event {hist['unvouched_from']}; "
            "events from there on are not vouched for (run 'appliance audit verify')"
        )
    return hist
