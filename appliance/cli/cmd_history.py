"""``appliance history NAME``: imports, pointer moves, who authorized them, loads, refusals.

JSON (see ``appliance.history``): ``name``, ``active`` (version or null),
``versions`` (store records as in ``list``), ``events`` (each ``{seq, ts,
type, outcome, code, version, summary, signers, reason, from_version,
to_version, authorization_id, digest, loader, detail}``; ``type`` is
``import``, ``rollback``, ``load``, ...; ``loader`` says who loaded, for load
events). An artifact the store and the audit log have
never seen: exit 2 ``not_found``.
"""

from __future__ import annotations

import argparse
from typing import Any

from appliance.cli.context import Context
from appliance.history import artifact_history
from appliance.home import Home
from bundles.errors import NotFoundError


def register(subs: Any, common: argparse.ArgumentParser) -> None:
    p = subs.add_parser("history", parents=[common], help="what happened to an artifact")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=run_history)


def run_history(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    db = Home(ctx.home).db()
    try:
        hist = artifact_history(db, args.name)
    finally:
        db.conn.close()
    if not hist["versions"] and not hist["events"]:
        raise NotFoundError(f"no artifact named {args.name!r} in the store or the audit log")
    ctx.say(f"{args.name}: active version {hist['active'] or 'none'}")
    for r in hist["versions"]:
        mark = "*" if r["active"] else " "
        ctx.say(f"  {mark} {r['version']:<14} {r['digest']['blake3'][:16]}  seq {r['sequence']}")
    for e in hist["events"]:
        ctx.say(f"{e['seq']:>6} {e['ts']} {e['summary']}")
    return hist
