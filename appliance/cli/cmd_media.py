"""``appliance media [--media DIR ...]``: removable media and the bundles on them.

Nothing is verified here: each bundle is only peeked at, so what is shown is
what it claims. JSON: ``media``: list of ``{path, removable (bool), source (the
mount's device, or "--media" for a folder given on the command line), bundles,
error (null or {code, message}: an unreadable removable mount)}``; each bundle
``{path, format: "dir"|"tar", stream, sequence, artifacts (count), not_read
(null, or why this scan did not read the manifest), verified: false, error:
null or {code, message}}`` (a broken bundle has its error and null fields);
``documents``: the ``*.json`` files (candidate rollback authorizations). A
``--media`` folder that is absent or unreadable: exit 3. Rules and limits:
``appliance.mediascan`` and docs/CLI.md.
"""

from __future__ import annotations

import argparse
from typing import Any

from appliance.cli.context import Context, add_media_option
from appliance.mediascan import scan
from bundles.media import printable


def register(subs: Any, common: argparse.ArgumentParser) -> None:
    p = subs.add_parser(
        "media", parents=[common], help="removable media and the bundles on them (unverified)"
    )
    add_media_option(p, "media_dirs", "")
    p.set_defaults(func=run_media)


def run_media(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    media = scan(args.media_dirs)
    if not media:
        ctx.say("no removable media found (use --media DIR to add a folder)")
    for m in media:  # every name from media is escaped: it may hold escape sequences
        kind = "removable" if m.removable else "folder"
        ctx.say(f"{printable(m.path, 400)}  ({kind}, {printable(m.source)})")
        if m.error is not None:
            ctx.say(f"  cannot read: [{m.error.code}] {printable(m.error.message, 400)}")
        elif not m.bundles:
            ctx.say("  no bundles")
        for b in m.bundles:
            where = f"  {printable(b.path, 400)} ({b.format})"
            if b.error is not None:
                ctx.say(f"{where}  BROKEN [{b.error.code}] {printable(b.error.message, 400)}")
            elif b.not_read is not None:
                ctx.say(f"{where}  {b.not_read}")
            else:
                ctx.say(
                    f"{where}  stream {printable(b.stream or '')} sequence {b.sequence}, "
                    f"{b.artifacts} artifact(s)  UNVERIFIED"
                )
    return {"media": [m.to_dict() for m in media]}
