"""``appliance import PATH... | --new [--media DIR ...]`` (docs/CLI.md has the JSON shapes).

One PATH: the single-bundle JSON (``path``, ``stream``, ``sequence``, ``dry_run``,
``signers``, ``artifacts``, ``trust_updates_applied``, ``bytes_verified``).
Several PATHs or ``--new``: ``imports`` (one entry per bundle, in stream and
sequence order: the single-bundle fields and ``ok: true``, or ``{path, ok:
false, error: {code, message}, exit_code}``), ``imported``, ``refused``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from appliance.cli.context import Context, add_media_option, utf8_clean
from appliance.cli.progress import ProgressBar
from appliance.errors import (
    ApplianceError,
    CancelledError,
    StateSuspectError,
    UsageError,
    exit_code_for,
)
from appliance.evaluation import claimed_statuses
from appliance.home import Home
from appliance.importer import import_bundle
from appliance.mediascan import natural_key, scan
from appliance.trust import labels_text
from bundles.media import open_media, printable
from bundles.reader import peek


def register(subs: Any, common: argparse.ArgumentParser) -> None:
    p = subs.add_parser(
        "import",
        parents=[common],
        help="verify and import bundles",
        epilog="Several PATHs (or --new) are imported in stream and sequence order, each with "
        "its own result; see docs/CLI.md.",
    )
    p.add_argument("paths", nargs="*", metavar="PATH", help="bundle directory or tar file")
    p.add_argument(
        "--new", action="store_true", help="import every new bundle on the media (see 'media')"
    )
    add_media_option(p, "media_dirs", "with --new: ")
    p.add_argument("--dry-run", action="store_true", help="verify only; change nothing")
    p.add_argument("--wait", action="store_true", help="wait for a running import")
    p.add_argument(
        "--expect-identity",
        metavar="HEX",
        help="import only the bundle with this bundle_identity (as a dry run printed it); "
        "any other is media_changed (exit 3)",
    )
    p.add_argument(
        "--progress",
        choices=("auto", "json", "none"),
        default="auto",
        help="progress on stderr: a bar on a terminal (auto), JSON lines, or none",
    )
    p.add_argument(
        "-q", "--quiet", action="store_true", help="no progress and no report (errors only)"
    )
    p.set_defaults(func=run_import)


class JsonProgress:
    """Progress as JSON lines on stderr, at most every ``interval`` s per artifact, and
    always at an artifact's end: ``{"progress": {"path", "artifact", "done", "size"}}``."""

    def __init__(self, stream: TextIO, path: str, interval: float = 0.2) -> None:
        self.stream = stream
        self.path = path
        self.interval = interval
        self.lock = threading.Lock()
        self.last: dict[str, float] = {}

    def __call__(self, name: str, done: int, size: int) -> None:
        now = time.monotonic()
        with self.lock:
            if done < size and now - self.last.get(name, 0.0) < self.interval:
                return
            self.last[name] = now
            line = {"progress": {"path": self.path, "artifact": name, "done": done, "size": size}}
            self.stream.write(json.dumps(utf8_clean(line), ensure_ascii=False) + "\n")
            self.stream.flush()

    def finish(self) -> None:
        """Nothing to close (each line is whole)."""


def _order(paths: list[str]) -> list[str]:
    """Stream, then sequence order, by what each manifest claims (verified at import);
    a path whose manifest cannot be read keeps its place after the readable ones."""

    def key(path: str) -> tuple[int, tuple[Any, ...], int]:
        try:
            with open_media(path) as source:
                _env, manifest = peek(source)
        except ApplianceError:
            return (1, (), 0)
        return (0, natural_key(manifest.stream), manifest.sequence)

    return sorted(paths, key=key)


def _new_on_media(ctx: Context, media_dirs: list[Path]) -> list[str]:
    media = scan(media_dirs)
    claimed = {b.path: b.claimed for m in media for b in m.bundles if b.claimed is not None}
    statuses = claimed_statuses(Home(ctx.home), claimed)
    return [p for p in claimed if statuses.get(p) == "new"]


def _import_one(ctx: Context, args: argparse.Namespace, path: str) -> dict[str, Any]:
    if args.quiet or args.progress == "none":
        bar: ProgressBar | JsonProgress = ProgressBar(ctx.stderr, enabled=False)
    elif args.progress == "json":
        bar = JsonProgress(ctx.stderr, path)
    else:
        bar = ProgressBar(ctx.stderr, enabled=not ctx.json)
    try:
        result = import_bundle(
            Home(ctx.home),
            path,
            dry_run=args.dry_run,
            wait=args.wait,
            witness_path=ctx.witness,
            progress=bar,
            cancel=ctx.cancel,
            expect_identity=args.expect_identity,
        )
    finally:
        bar.finish()
    verb = "verified (dry run, nothing changed)" if result.dry_run else "imported"
    ctx.say(
        f"{ctx.paint(verb, 'green')} stream {printable(result.stream)} sequence "
        f"{result.sequence}, signed by {len(result.signers)} publisher key(s): "
        f"{labels_text(result.labels)}"
    )
    # One ``say`` for the whole listing (the same bytes): a line at a time cost two
    # writes per artifact on an unbuffered stdout, 40,000 for 20,000 artifacts. The
    # listing comes after the import either way; the progress bar is on stderr.
    if result.artifacts and not ctx.quiet:
        ctx.say(
            "\n".join(
                f"  {printable(a['name'])}@{printable(a['version']):<12} {a['size']:>14,} B  "
                f"{a['digest']['blake3'][:16]}  {a['status']}"
                for a in result.artifacts
            )
        )
    if result.trust_updates:
        ctx.say(f"  trust updates applied: {', '.join(map(str, result.trust_updates))}")
    if result.dry_run:
        ctx.say(f"  bundle identity {result.identity} (import it with --expect-identity)")
    for w in result.warnings:
        ctx.warn(f"appliance: warning: {w}")
    return result.to_dict()


def run_import(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    if args.new == bool(args.paths):
        raise UsageError("appliance import: give PATH ... or --new (not both)")
    if args.media_dirs and not args.new:
        raise UsageError("appliance import: --media goes with --new")
    if args.expect_identity is not None:
        if len(args.paths) != 1:
            raise UsageError("appliance import: --expect-identity goes with one PATH")
        if not re.fullmatch(r"[0-9a-f]{64}", args.expect_identity):
            raise UsageError("appliance import: --expect-identity takes 64 lowercase hex digits")
    ctx.cancellable = True  # SIGINT/SIGTERM/SIGHUP set ctx.cancel: staging removed, exit 3
    if args.quiet or args.progress == "json":
        ctx.quiet = True  # with --progress json, stderr holds the progress lines (and errors)
    if len(args.paths) == 1:
        return _import_one(ctx, args, os.fspath(args.paths[0]))
    paths = _new_on_media(ctx, args.media_dirs) if args.new else [os.fspath(p) for p in args.paths]
    if args.new and not paths:
        ctx.say("no new bundles on the media")
    return _import_many(ctx, args, _order(paths))


def _import_many(ctx: Context, args: argparse.Namespace, paths: list[str]) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    first: ApplianceError | None = None
    for path in paths:
        try:
            results.append({"ok": True, **_import_one(ctx, args, path)})
            continue
        except CancelledError:
            raise  # interrupted: stop here (main reports it)
        except ApplianceError as e:
            first = first or e
            results.append(
                {
                    "path": path,
                    "ok": False,
                    "error": {"code": e.code, "message": e.message},
                    "exit_code": int(exit_code_for(e)),
                }
            )
            ctx.warn(f"appliance: {printable(path, 400)}: refused [{e.code}]: {e.message}")
            if isinstance(e, StateSuspectError):
                break  # the appliance's own state is suspect: import nothing more
    summary = {
        "imports": results,
        "imported": sum(r["ok"] for r in results),
        "refused": sum(not r["ok"] for r in results),
    }
    if first is not None:
        ctx.extra = summary
        raise first  # exit code: the first refusal's (all results are in the JSON)
    return summary
