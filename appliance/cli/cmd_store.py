"""``appliance list``, ``appliance verify [NAME[@VERSION] ...]``.

``list`` JSON: ``artifacts``: records ``{name, version, digest: {blake3}, size,
media_type, release, stream, sequence, signers, imported_at, active}``.
``verify`` JSON: ``results`` (``{name, version, digest, status: ok|tampered|
unauthorized|untrusted, code, message}``), ``tampered`` (tampered or
unauthorized), ``untrusted``, ``checked``. Exit 4 when any object is tampered
or any record or active pointer is not backed by signed evidence
(``record_unauthorized``, ``pointer_unauthorized``), else 1 when any record's
signers no longer meet today's trust, else 0; a failing run's JSON keeps
``results`` beside ``error``.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from appliance.cli.context import Context, no_cycle_collection
from appliance.db import check_integrity
from appliance.errors import PolicyError, StateSuspectError, error_class
from appliance.headstart import HeadStart, take_early
from appliance.home import Home
from appliance.store import find, parse_ref, records
from appliance.truststore import load_trust
from appliance.verify import RecordStatus, verify_records


def register(subs: Any, common: argparse.ArgumentParser) -> None:
    ls = subs.add_parser("list", parents=[common], help="what is in the store")
    ls.add_argument("--at", metavar="ISO8601", help="what was active then (from the audit log)")
    ls.set_defaults(func=run_list)
    v = subs.add_parser("verify", parents=[common], help="re-hash what is in the store")
    v.add_argument("refs", nargs="*", metavar="NAME[@VERSION]")
    v.set_defaults(func=run_verify)


def run_list(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    from appliance.cli.cmd_history import parse_at  # ``list`` only: not loaded by ``verify``
    from appliance.history import store_at
    from bundles.timeutil import format_time

    db = Home(ctx.home).db()
    recs = records(db)
    at = parse_at(args.at)
    if at is not None:  # the store as the audit log tells it: imported by then, active then
        then, imported = store_at(db, at)
        recs = [
            dataclasses.replace(r, active=then.get(r.name) == r.version)
            for r in recs
            if (r.name, r.version) in imported
        ]
    if not recs:
        ctx.say("the store is empty")
    for r in recs:
        mark = "*" if r.active else " "
        ctx.say(
            f"{mark} {r.name}@{r.version:<14} {r.size:>14,} B  {r.digest[:16]}  "
            f"stream {r.stream} seq {r.sequence}"
        )
    out: dict[str, Any] = {"artifacts": [r.to_dict() for r in recs]}
    if at is not None:
        out["at"] = format_time(at)
    return out


def run_verify(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    # The launcher's hash of the one named record's object, or of the store's first large
    # object, started before the CLI was imported (``appliance.launch``); taken only for
    # the very inode verified here.
    early = take_early(ctx.home, args.refs[0] if len(args.refs) == 1 else None)
    try:
        with no_cycle_collection():
            return _verify(args, ctx, early)
    finally:
        if early is not None:
            early.close()


def _verify_line(res: RecordStatus) -> str:
    ref = f"{res.record.name}@{res.record.version}"
    line = f"{res.status.upper():<12} {ref}"
    if res.message is not None:
        # messages start with the ref (or the name) already; do not say it twice
        line += f"  [{res.code}] {res.message.removeprefix(ref + ': ')}"
    return line


def _verify(args: argparse.Namespace, ctx: Context, early: HeadStart | None) -> dict[str, Any]:
    home = Home(ctx.home)
    db = home.db()
    check_integrity(db)  # also the pages of tables that no record check reads
    trust = load_trust(db)
    if args.refs:
        targets = [find(db, *parse_ref(ref)) for ref in args.refs]
    else:
        targets = records(db)
    results = verify_records(home, db, trust, targets, early=early)
    # One ``say`` for the whole listing (the same bytes): a line at a time cost two
    # writes per record on an unbuffered stdout, 40,000 for 20,000 records.
    if results and not ctx.quiet:
        ctx.say("\n".join(_verify_line(res) for res in results))
    tampered = [r for r in results if r.status in ("tampered", "unauthorized")]
    untrusted = [r for r in results if r.status == "untrusted"]
    summary: dict[str, Any] = {
        "checked": len(results),
        "tampered": len(tampered),
        "untrusted": len(untrusted),
    }
    if ctx.json:  # (only JSON prints them: 20,000 dicts are not built for nothing)
        summary = {"results": [r.to_dict() for r in results], **summary}
    if tampered:
        ctx.extra = summary
        raise error_class(tampered[0].code or "", StateSuspectError)(
            f"{len(tampered)} of {len(results)} stored artifact(s) tampered or unauthorized: "
            + ", ".join(f"{r.record.name}@{r.record.version} ({r.code})" for r in tampered)
        )
    if untrusted:
        ctx.extra = summary
        first = untrusted[0]
        raise error_class(first.code or "", PolicyError)(
            f"{len(untrusted)} record(s) no longer meet today's trust "
            f"({first.record.name}@{first.record.version}: {first.message})"
        )
    ctx.say(f"{len(results)} artifact(s) verified")
    return summary
