"""``appliance media [--media DIR ...]``: removable media and the bundles on them.

Nothing is verified here: each bundle is only peeked at, so what is shown is
what it claims. JSON: ``media``: list of ``{path, removable (bool), source (the
mount's device, or "--media" for a folder given on the command line), bundles,
error (null or {code, message}: an unreadable removable mount)}``; each bundle
``{path, format: "dir"|"tar", stream, sequence, artifacts (count), verified:
false, error: null or {code, message}}`` (a broken bundle has its error and
null fields). A ``--media`` folder that is absent or unreadable: exit 3.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from appliance.cli.context import Context
from appliance.mediascan import scan


def register(subs: Any, common: argparse.ArgumentParser) -> None:
    p = subs.add_parser(
        "media", parents=[common], help="removable media and the bundles on them (unverified)"
    )
    p.add_argument(
        "--media",
        dest="media_dirs",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="a folder that counts as media (repeatable)",
    )
    p.set_defaults(func=run_media)


def run_media(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    media = scan(args.media_dirs)
    if not media:
        ctx.say("no removable media found (use --media DIR to add a folder)")
    for m in media:
        kind = "removable" if m.removable else "folder"
        ctx.say(f"{m.path}  ({kind}, {m.source})")
        if m.error is not None:
            ctx.say(f"  cannot read: [{m.error.code}] {m.error.message}")
        elif not m.bundles:
            ctx.say("  no bundles")
        for b in m.bundles:
            if b.error is not None:
                ctx.say(f"  {b.path} ({b.format})  BROKEN [{b.error.code}] {b.error.message}")
            else:
                ctx.say(
                    f"  {b.path} ({b.format})  stream {b.stream} sequence {b.sequence}, "
                    f"{b.artifacts} artifact(s)  UNVERIFIED"
                )
    return {"media": [m.to_dict() for m in media]}
