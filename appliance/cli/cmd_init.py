"""``appliance init --root-key R.pub [...] [--root-threshold N] [--site ID]``.

JSON: ``home``, ``site``, ``trust_version`` (1), ``root_keys`` (key ids),
``root_threshold``, ``witness`` (path or null); with ``--service-user``,
``service_user`` (``{user, uid, gid}``).
"""

from __future__ import annotations

import argparse
from typing import Any

from appliance.cli.context import Context, path_arg
from appliance.errors import UnknownUserError
from appliance.home import Home
from appliance.initialize import init_home
from bundles.errors import BadNameError, UsageError
from bundles.keys import load_public_key
from bundles.names import check_identifier


def register(subs: Any, common: argparse.ArgumentParser) -> None:
    p = subs.add_parser("init", parents=[common], help="initialise an appliance home")
    p.add_argument(
        "--root-key",
        type=path_arg,
        action="append",
        required=True,
        help="root public key (repeat for several)",
    )
    p.add_argument("--root-threshold", type=int, default=1)
    p.add_argument("--site", help="this appliance's site id")
    p.add_argument(
        "--service-user",
        metavar="USER",
        help="give the home to USER (appliance serve's user) and close it to others",
    )
    p.set_defaults(func=run_init)


def run_init(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    site = None
    if args.site is not None:
        try:
            site = check_identifier(args.site, "site")
        except BadNameError as e:
            raise UsageError(e.message) from e
    keys = [load_public_key(p) for p in args.root_key]
    if len({k.keyid for k in keys}) != len(keys):
        raise UsageError("the same root key was given twice")
    if not 1 <= args.root_threshold <= len(keys):
        raise UsageError(f"--root-threshold must be between 1 and {len(keys)}")
    if args.service_user is not None:  # issue 11: checked before anything is created
        import pwd

        try:
            pwd.getpwnam(args.service_user)
        except KeyError as e:
            raise UnknownUserError(f"--service-user {args.service_user!r}: no such user") from e
    result = init_home(Home(ctx.home), keys, args.root_threshold, site, ctx.witness)
    if args.service_user is not None:
        from appliance.service.ownership import give_home_to

        result["service_user"] = give_home_to(Home(ctx.home), args.service_user)
        ctx.say(f"home owned by {args.service_user}, closed to other users")
    ctx.say(
        f"initialised {ctx.home} (trust version 1, site {site or 'unnamed'}, "
        f"{len(keys)} root key(s), threshold {args.root_threshold})"
    )
    if ctx.witness is None:
        ctx.say("state witness: off (use --witness PATH to detect restored older state)")
    return result
