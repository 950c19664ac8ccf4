"""``appliance serve [--socket PATH]``: the loader service, in the foreground.

Listens on the sockets systemd passed (``LISTEN_FDS``), else on ``--socket``,
``$APPLIANCE_SOCKET``, ``/run/appliance/appliance.sock`` (root) or
``$XDG_RUNTIME_DIR/appliance.sock``. Logs to stderr; SIGTERM stops it
cleanly (exit 0). See docs/PROTOCOL.md and docs/DEPLOY.md. With ``--json``
the one object, printed when it stops, holds ``socket``, ``served``,
``refused``.
"""

from __future__ import annotations

import argparse
from typing import Any

from appliance.cli.context import Context, path_arg
from appliance.home import Home
from appliance.service.server import Config, serve
from bundles.errors import OperationalError


def register(subs: Any, common: argparse.ArgumentParser) -> None:
    p = subs.add_parser("serve", parents=[common], help="serve verified loads on a Unix socket")
    p.add_argument("--socket", type=path_arg, metavar="PATH", help="where to listen")
    p.add_argument("--workers", type=int, default=32, help="loads handled at once (default 32)")
    p.add_argument(
        "--watch",
        action="store_true",
        help="also run the store watcher inside the service (alarms; docs/WATCH.md)",
    )
    p.add_argument("--scrub", metavar="RATE", help="with --watch: re-hash objects at RATE (200M)")
    p.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    if not 1 <= args.workers <= 1024:
        from bundles.errors import UsageError

        raise UsageError("--workers must be between 1 and 1024")
    if args.scrub is not None and not args.watch:
        from bundles.errors import UsageError

        raise UsageError("--scrub needs --watch")
    home = Home(ctx.home)
    home.require()
    background = None
    if args.watch:  # the same watcher as 'appliance watch', in a thread of the service
        from appliance.watch import Watcher, parse_rate

        rate = parse_rate(args.scrub) if args.scrub is not None else 0
        background = Watcher(home, ctx.witness, scrub_rate=rate).run
    config = Config(home, ctx.witness, workers=args.workers, log=ctx.warn, background=background)
    done = serve(config, args.socket)
    if done.code:
        raise OperationalError("the background component failed; the service stopped")
    return {"socket": done.where, "served": done.served, "refused": done.refused}
