"""``appliance key new NAME --out DIR``."""

from __future__ import annotations

import argparse
from typing import Any

from appliance.cli.context import Context, path_arg
from bundles.errors import BadNameError, UsageError
from bundles.keys import PrivateKey, save_keypair
from bundles.names import check_identifier


def register(subs: Any, common: argparse.ArgumentParser) -> None:
    key = subs.add_parser("key", parents=[common], help="make signing keys (connected side)")
    key_subs = key.add_subparsers(dest="key_command", metavar="ACTION", parser_class=type(key))
    new = key_subs.add_parser("new", parents=[common], help="make an Ed25519 key pair")
    new.add_argument("name", help="file stem: NAME.key and NAME.pub")
    new.add_argument("--out", type=path_arg, required=True, help="directory for the key files")
    new.set_defaults(func=key_new)


def key_new(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    try:
        name = check_identifier(args.name, "key name")
    except BadNameError as e:
        raise UsageError(e.message) from e
    key = PrivateKey.generate()
    priv, pub = save_keypair(key, args.out, name)
    ctx.say(f"key id {key.keyid}")
    ctx.say(f"private key {priv} (mode 0600; keep it offline)")
    ctx.say(f"public key  {pub}")
    return {"keyid": key.keyid, "private_key": str(priv), "public_key": str(pub)}
