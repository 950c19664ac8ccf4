"""``appliance watch [--once] [--scrub RATE]`` and ``appliance alarms [--all] [--ack SEQ]``.

See docs/WATCH.md (what is watched, the output, how to recover from each alarm).

``watch`` streams: one stderr line per alarm; with ``--json`` one JSON object
per line on stdout (the documented exception to one object): ``{"watching":
...}`` when ready, ``{"alarm": CODE, "subject", "at", "message", "advice"}``
per alarm, ``{"scrub": {...}}`` progress lines, and ``{"ok": true, "alarms":
N}`` when stopped (SIGTERM, SIGINT). ``watch --once`` checks everything once
(every object re-hashed) and prints one object: ``findings`` (list of alarms),
exit 4 (the first finding's code) when there are any, else 0.

``alarms`` JSON: ``alarms`` (newest first; each ``{seq, ts, alarm, subject,
message, at, advice, acknowledged}``). ``alarms --ack SEQ [--note TEXT]``
records the ``alarm_ack`` audit event: JSON ``acknowledged`` (the seq) and
``event``. An unknown seq: exit 2 ``alarm_not_found``; twice: exit 2
``alarm_already_acknowledged``.
"""

from __future__ import annotations

import argparse
import signal
import threading
from types import FrameType
from typing import Any

from appliance import audit
from appliance.cli.context import Context
from appliance.home import Home
from appliance.watch import (
    Watcher,
    acknowledge,
    alarms,
    json_sink,
    parse_rate,
    stderr_sink,
    syslog_sink,
)
from appliance.watch.report import Sink

PROGRESS_EVERY = 1.0


def register(subs: Any, common: argparse.ArgumentParser) -> None:
    w = subs.add_parser("watch", parents=[common], help="watch the store and raise alarms")
    w.add_argument("--once", action="store_true", help="check everything once; exit 4 on findings")
    w.add_argument(
        "--scrub",
        default="0",
        metavar="RATE",
        help="re-hash every object in the background at RATE bytes/s (200M; 0: off)",
    )
    w.set_defaults(func=run_watch)

    a = subs.add_parser("alarms", parents=[common], help="list or acknowledge alarms")
    a.add_argument("--all", action="store_true", help="acknowledged ones too")
    a.add_argument("--ack", type=int, metavar="SEQ", help="acknowledge alarm SEQ (audited)")
    a.add_argument("--note", default="", help="with --ack: what was done (recorded)")
    a.set_defaults(func=run_alarms)


def _sinks(ctx: Context, *, stream_json: bool) -> tuple[Sink, ...]:
    sinks: list[Sink] = [stderr_sink(ctx.stderr)]
    if stream_json:
        sinks.append(json_sink(ctx.stdout))
    log = syslog_sink()
    if log is not None:
        sinks.append(log)
    return tuple(sinks)


def run_watch(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    rate = parse_rate(args.scrub)
    home = Home(ctx.home)
    home.require()
    if args.once:
        watcher = Watcher(home, ctx.witness, sinks=_sinks(ctx, stream_json=False))
        found = watcher.check_once()
        ctx.extra["findings"] = [a.to_dict() for a in found]
        if found:
            raise found[0].error()
        ctx.say(f"watch --once: {home.root} is clean")
        return {"findings": []}
    watcher = Watcher(home, ctx.witness, sinks=_sinks(ctx, stream_json=ctx.json), scrub_rate=rate)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    thread = threading.Thread(target=watcher.run, args=(stop,), name="watch")
    try:
        thread.start()
        while not watcher.ready.wait(0.1):
            if not thread.is_alive():
                break
        if thread.is_alive():
            what = f"watching {home.root} (objects, database, witness {watcher.witness_path})"
            ctx.warn(f"appliance: {what}")
            if ctx.json:
                ctx.emit_json({"watching": str(home.root), "witness": _str(watcher.witness_path)})
        last: dict[str, Any] | None = None
        while thread.is_alive():
            thread.join(PROGRESS_EVERY)
            progress = watcher.scrub_progress()
            if ctx.json and progress is not None and progress.to_dict() != last:
                last = progress.to_dict()
                ctx.emit_json({"scrub": last})
    finally:
        stop.set()
        thread.join()
        for s, h in old.items():
            signal.signal(s, h)
    return {"alarms": len(watcher.raised), "head": list(_head(home))}


def _str(value: object) -> str | None:
    return None if value is None else str(value)


def _head(home: Home) -> tuple[int, str]:
    db = home.db()
    try:
        return audit.head(db)
    finally:
        db.conn.close()


def run_alarms(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    db = Home(ctx.home).db()
    try:
        if args.ack is not None:
            event = acknowledge(db, args.ack, args.note)
            ctx.say(f"alarm {args.ack} acknowledged (audit event {event['seq']})")
            return {"acknowledged": args.ack, "event": audit.public_event(event)}
        found = alarms(db, include_acknowledged=args.all)
    finally:
        db.conn.close()
    for a in found:
        state = "acknowledged" if a.acknowledged else "UNACKNOWLEDGED"
        ctx.say(f"{a.seq:>6} {a.at} [{a.code}] {a.subject}: {a.message} ({state})")
        ctx.say(f"       what to do: {a.advice}")
    if not found:
        ctx.say("no unacknowledged alarms" if not args.all else "no alarms")
    return {"alarms": [a.to_dict() for a in found]}


__all__ = ["register"]
