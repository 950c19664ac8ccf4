"""``appliance rollback authorize OUT NAME ...`` and ``appliance rollback NAME --authorization F``.

Connected side: ``rollback authorize OUT NAME --to VERSION --key K.key [...]
[--reason TEXT] [--expires 7d|ISO] [--digest BLAKE3HEX] [--site ID ...]``
writes a DSSE envelope of a single-use rollback authorization to OUT (never
overwritten; no ``--site``: any site). JSON: ``out``, ``id``, ``name``,
``to_version``, ``digest`` (hex or null), ``reason``, ``issued_at``,
``expires``, ``sites``, ``any_site``, ``signers`` (key ids), ``labels``
(each signer's root-signed label when ``--home`` names an existing home, else
null).

Appliance side: ``rollback NAME --authorization FILE [--wait]`` verifies the
authorization (see ``appliance.rollback`` for the checks and their codes)
and moves NAME's active version. JSON: ``name``, ``from_version``,
``to_version``, ``authorization_id``, ``authorized_by`` (rollback key ids
that counted), ``reason``, ``digest`` (``{blake3}`` of the now-active
version), ``labels`` (each authorizer's root-signed label). Refusals exit 1
(``rollback_not_authorized``, ``key_not_authorized``,
``revoked_key``, ``threshold_not_met``, ``bad_signature``,
``authorization_expired``, ``authorization_reused``,
``authorization_mismatch``), 2 (``not_found``, ``already_active``), 3 (file
absent, lock held) or 4 (witness); each refusal is in the audit log.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from appliance.cli.context import Context, path_arg
from appliance.home import Home
from appliance.rollback import apply_rollback, authorize_rollback, read_authorization
from appliance.trust import KeyLabel, key_labels, labels_text
from appliance.truststore import naming_trust
from bundles.errors import BadNameError, UsageError
from bundles.keys import load_private_key
from bundles.names import check_artifact_name, check_identifier
from bundles.timeutil import format_time, parse_expiry

_AUTHORIZE_ONLY = ("to", "key", "reason", "expires", "digest", "site", "from_version")


def register(subs: Any, common: argparse.ArgumentParser) -> None:
    p = subs.add_parser(
        "rollback",
        parents=[common],
        help="roll an artifact back (appliance) or authorize a rollback (connected side)",
        usage="appliance rollback NAME --authorization FILE [--wait]\n"
        "       appliance rollback authorize OUT NAME --to VERSION --key K.key [...] "
        "[--from VERSION] [--reason TEXT] [--expires 7d|ISO] [--digest HEX] [--site ID ...]",
    )
    p.add_argument("target", nargs="+", metavar="NAME | authorize OUT NAME")
    p.add_argument("--authorization", type=path_arg, help="the signed authorization file")
    p.add_argument("--wait", action="store_true", help="wait for a running import")
    p.add_argument("--to", help="(authorize) the version to roll back to")
    p.add_argument(
        "--from",
        dest="from_version",
        help="(authorize) valid only while this version is active (the one being undone)",
    )
    p.add_argument("--key", type=path_arg, action="append", help="(authorize) rollback private key")
    p.add_argument("--reason", help="(authorize) why; shown by history and the audit log")
    p.add_argument("--expires", help="(authorize) 7d (default), 12h, ... or ISO 8601")
    p.add_argument("--digest", help="(authorize) BLAKE3 hex the target must have")
    p.add_argument("--site", action="append", help="(authorize) valid only at these sites")
    p.set_defaults(func=run_rollback)


def run_rollback(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    target: list[str] = args.target
    if target[0] == "authorize" and len(target) == 3:
        return run_authorize(args, ctx, Path(target[1]), target[2])
    if len(target) != 1:
        raise UsageError(
            "use: appliance rollback NAME --authorization FILE, or "
            "appliance rollback authorize OUT NAME --to VERSION --key K.key"
        )
    given = [
        f"--{o.replace('_version', '')}" for o in _AUTHORIZE_ONLY if getattr(args, o) is not None
    ]
    if given:
        raise UsageError(f"{', '.join(given)}: only for 'rollback authorize'")
    if args.authorization is None:
        raise UsageError("rollback NAME needs --authorization FILE")
    name = target[0]
    result = apply_rollback(
        Home(ctx.home),
        name,
        read_authorization(args.authorization),
        witness_path=ctx.witness,
        wait=args.wait,
        source=str(args.authorization),
    )
    who = labels_text(result.labels)
    ctx.say(
        f"rolled {name} back from {result.from_version} to {result.to_version}, "
        f"authorized by {who} "
        f"({result.reason or 'no reason given'}); the next load verifies it in full"
    )
    for w in result.warnings:
        ctx.warn(f"appliance: warning: {w}")
    return result.to_dict()


def run_authorize(args: argparse.Namespace, ctx: Context, out: Path, name: str) -> dict[str, Any]:
    if args.authorization is not None or args.wait:
        raise UsageError("--authorization and --wait are for 'rollback NAME'")
    if not args.to or not args.key:
        raise UsageError("rollback authorize needs --to VERSION and --key K.key")
    try:
        name = check_artifact_name(name)
        version = check_identifier(args.to, "--to")
        from_version = check_identifier(args.from_version, "--from") if args.from_version else None
        sites = tuple(check_identifier(s, "--site") for s in args.site or ())
    except BadNameError as e:
        raise UsageError(e.message) from e
    digest = args.digest.lower() if args.digest else None
    if digest is not None and (
        len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest)
    ):
        raise UsageError("--digest: a BLAKE3 digest is 64 hex characters")
    try:
        expires = parse_expiry(args.expires) if args.expires else None
    except ValueError as e:
        raise UsageError(str(e)) from e
    keys = [load_private_key(p) for p in args.key]
    auth, _ = authorize_rollback(
        out,
        name,
        version,
        keys,
        reason=args.reason or "",
        expires=expires,
        digest=digest,
        sites=sites,
        from_version=from_version,
    )
    signers = sorted({k.keyid for k in keys})
    labels = _home_labels(ctx, signers)
    ctx.say(
        f"wrote rollback authorization {auth.id} for {name} -> {version} to {out} "
        f"(expires {format_time(auth.expires)}, "
        f"{'any site' if auth.any_site else 'sites ' + ', '.join(auth.sites)}; single use), "
        f"signed by {labels_text(labels)}"
    )
    return {
        "out": str(out),
        **{k: v for k, v in auth.to_dict().items() if k != "type"},
        "signers": signers,
        "labels": labels,
    }


def _home_labels(ctx: Context, keyids: list[str]) -> list[KeyLabel]:
    """The connected side usually has no home: labels (root-signed) only when ``--home``
    names an existing one whose signed trust chain derives; else null."""
    home = Home(ctx.home)
    if not home.exists():
        return key_labels(keyids, None)
    db = home.db()
    try:
        state, _why = naming_trust(db)
    finally:
        db.conn.close()
    return key_labels(keyids, state)
