"""``appliance audit verify|show|export`` and ``appliance witness reset``.

``audit verify`` JSON: ``events``, ``head`` (hash), ``witness`` (status).
``audit show`` JSON: ``events`` (each ``{seq, ts, type, outcome, code, name,
version, detail, prev_hash, hash, labels}``; ``labels`` lists ``{keyid, label}`` for
each key id the detail names (signers, authorizers, root keys), the label
root-signed or null).
``audit export`` prints JSON Lines, one event a line; with ``--json``, one
object with ``events``.
``witness reset`` JSON: ``path``, ``witness`` (the counters written).
``audit verify`` exits 4 when the chain is broken, when the home is behind its
witness (``audit_chain_broken``) or when a configured witness is absent
(``witness_missing``).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from appliance import audit, witness
from appliance.cli.context import Context
from appliance.errors import AuditChainError
from appliance.history import event_keys
from appliance.home import Home, HomeLock
from appliance.integrity import check_integrity
from appliance.trust import key_labels, labels_text
from appliance.truststore import naming_trust
from bundles.errors import UsageError


def register(subs: Any, common: argparse.ArgumentParser) -> None:
    a = subs.add_parser("audit", parents=[common], help="the hash-chained audit log")
    a_subs = a.add_subparsers(dest="audit_command", metavar="ACTION", parser_class=type(a))
    v = a_subs.add_parser("verify", parents=[common], help="check the whole chain")
    v.set_defaults(func=run_verify)
    s = a_subs.add_parser("show", parents=[common], help="recent events")
    s.add_argument("--limit", type=int, default=50, help="last N events (0: all)")
    s.set_defaults(func=run_show)
    e = a_subs.add_parser("export", parents=[common], help="every event as JSON Lines")
    e.set_defaults(func=run_export)

    w = subs.add_parser("witness", parents=[common], help="the state witness")
    w_subs = w.add_subparsers(dest="witness_command", metavar="ACTION", parser_class=type(w))
    r = w_subs.add_parser(
        "reset", parents=[common], help="accept the home as it is and rewrite the witness (audited)"
    )
    r.add_argument("--reason", required=True, help="why (recorded in the audit log)")
    r.set_defaults(func=run_witness_reset)


def run_verify(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    report = check_integrity(Home(ctx.home).db(), ctx.witness)
    ctx.say(
        f"audit chain intact: {report.events} events, head {report.head[:16]}; trust version "
        f"{report.trust_version} and {len(report.streams)} stream mark(s) match the signed "
        f"evidence; witness {report.witness}"
    )
    return {"events": report.events, "head": report.head, "witness": report.witness}


def _line(e: dict[str, Any]) -> str:
    what = f"{e['name']}@{e['version']}" if e["name"] else (e["version"] or "")
    code = f" [{e['code']}]" if e["code"] else ""
    trusted = e["detail"].get("trusted_time") or "unknown"
    who = f" by {labels_text(e['labels'])}" if e["labels"] else ""
    return (
        f"{e['seq']:>6} {e['ts']} trusted {trusted} {e['type']:<14} {e['outcome']:<9}{code} "
        f"{what}{who}"
    )


def run_show(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    if args.limit < 0:
        raise UsageError("--limit must be 0 or more")
    db = Home(ctx.home).db()
    keys, labels_error = naming_trust(db)
    rows = audit.rows(db)
    events = [audit.public_event(e) for e in (rows[-args.limit :] if args.limit else rows)]
    for e in events:  # issue 14: each key id the event names, with its root-signed label
        ids = event_keys(e["detail"])
        e["labels"] = key_labels(ids, keys)
        ctx.say(_line(e))
    if labels_error is not None:
        ctx.warn(f"appliance: warning: {labels_error}")
    return {"events": events}


def _exported(event: dict[str, Any]) -> dict[str, Any]:
    try:
        return {**audit.public_event(event), "detail_json": event["detail"]}
    except AuditChainError as e:
        return {**event, "detail": None, "detail_json": event["detail"], "detail_error": e.message}


def run_export(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    # detail_json: the exact bytes the chain hashes (docs/AUDIT.md), beside the parsed detail.
    # An export is the responder's raw material: a detail that is not a JSON object is
    # exported as it is stored (detail null, detail_error), never refused or dropped.
    events = [_exported(e) for e in audit.rows(Home(ctx.home).db())]
    if not ctx.json:
        for e in events:
            ctx.write_out(json.dumps(e, sort_keys=True, ensure_ascii=False) + "\n")
    return {"events": events}


def run_witness_reset(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    home = Home(ctx.home)
    db = home.db()
    with HomeLock(home):
        doc = witness.reset(db, ctx.witness, args.reason)
    path = witness.configured_path(db, None)
    ctx.say(f"witness {path} reset to this home's state (recorded in the audit log)")
    return {"path": str(path), "witness": doc}
