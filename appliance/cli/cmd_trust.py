"""``appliance trust update|apply|show``.

``trust update`` (connected side) JSON: ``out``, ``version``, ``operations``,
``signers``. ``trust apply`` JSON: ``version``, ``operations``.
``trust show`` JSON: ``trust_version``, ``site``, ``roles`` (list of
``{role, stream, threshold, keys}``; ``model-signer`` rows hold ECDSA keys),
``revoked`` (key ids), ``model_signature_required`` (streams), ``streams``
(``{stream: sequence}``), ``trusted_time``, ``witness`` (``{status, path, detail}``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from appliance import witness
from appliance.cli.context import Context
from appliance.home import Home, HomeLock
from appliance.importer import apply_trust_envelope
from appliance.trust import describe
from appliance.truststore import load_trust, site, stream_sequences, trusted_now
from bundles.documents import (
    ROLES,
    TRUST_PAYLOAD_TYPE,
    AddKey,
    AddModelSigner,
    Operation,
    RequireModelSignature,
    RevokeKey,
    RotateRoot,
    SetThreshold,
    TrustUpdate,
)
from bundles.dsse import Envelope, sign_envelope
from bundles.errors import BadNameError, UsageError
from bundles.files import read_input_file, write_new_file
from bundles.keys import load_ec_public_key, load_private_key, load_public_key
from bundles.names import check_identifier
from bundles.timeutil import format_time, utcnow

MAX_FILE = 2 << 20


class _Op(argparse.Action):
    """Collect operations in command-line order; --role/--stream bind to the last --add-key."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        ns: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option: str | None = None,
    ) -> None:
        ops: list[dict[str, Any]] = getattr(ns, "ops", None) or []
        if self.dest in ("role", "stream"):
            if not ops or ops[-1]["op"] != "add_key":
                raise UsageError(f"--{self.dest} must follow an --add-key")
            ops[-1][self.dest] = values
        else:
            ops.append({"op": self.dest, "value": values})
        ns.ops = ops


def register(subs: Any, common: argparse.ArgumentParser) -> None:
    trust = subs.add_parser("trust", parents=[common], help="trust updates and the trust store")
    ts = trust.add_subparsers(dest="trust_command", metavar="ACTION", parser_class=type(trust))

    up = ts.add_parser("update", parents=[common], help="make a root-signed trust update")
    up.add_argument("out", type=Path)
    up.add_argument("--version", type=int, required=True)
    up.add_argument(
        "--key",
        type=Path,
        action="append",
        required=True,
        help="root private key (old and, for --rotate-root, new)",
    )
    up.add_argument("--add-key", dest="add_key", action=_Op, metavar="PUB")
    up.add_argument(
        "--role", dest="role", action=_Op, choices=("publisher", "rollback", "model-signer")
    )
    up.add_argument("--stream", dest="stream", action=_Op)
    up.add_argument("--revoke", dest="revoke", action=_Op, metavar="KEYID")
    up.add_argument("--threshold", dest="threshold", action=_Op, metavar="ROLE[:STREAM]=N")
    up.add_argument("--rotate-root", dest="rotate_root", action=_Op, nargs="+", metavar="PUB")
    up.add_argument("--root-threshold", type=int)
    up.add_argument(  # issue 17
        "--require-model-signature", dest="require_model_signature", action=_Op, metavar="STREAM"
    )
    up.add_argument(
        "--no-require-model-signature",
        dest="no_require_model_signature",
        action=_Op,
        metavar="STREAM",
    )
    up.set_defaults(func=run_update, ops=None)

    ap = ts.add_parser("apply", parents=[common], help="apply a trust update file")
    ap.add_argument("file", type=Path)
    ap.add_argument("--wait", action="store_true", help="wait for a running import")
    ap.set_defaults(func=run_apply)

    show = ts.add_parser("show", parents=[common], help="keys, roles, thresholds, counters")
    show.set_defaults(func=run_show)


def _identifier(value: str, what: str) -> str:
    try:
        return check_identifier(value, what)
    except BadNameError as e:
        raise UsageError(e.message) from e


def _operations(args: argparse.Namespace) -> list[Operation]:
    ops: list[Operation] = []
    for raw in args.ops or []:
        kind, value = raw["op"], raw["value"]
        if kind == "add_key":
            role = raw.get("role")
            if role is None:
                raise UsageError(f"--add-key {value} needs a --role")
            stream = raw.get("stream")
            if role == "model-signer":  # issue 17: ECDSA keys of OpenSSF model-signing
                if stream is None:
                    raise UsageError("--role model-signer needs a --stream")
                ops.append(
                    AddModelSigner(
                        load_ec_public_key(Path(value)),
                        _identifier(stream, "stream"),
                        raw.get("name"),
                    )
                )
                continue
            if (role == "publisher") != (stream is not None):
                raise UsageError("--stream is required for publisher keys and only for them")
            ops.append(
                AddKey(
                    load_public_key(Path(value)),
                    role,
                    _identifier(stream, "stream") if stream else None,
                )
            )
        elif kind == "revoke":
            if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
                raise UsageError(f"--revoke {value!r}: a key id is 64 lowercase hex characters")
            ops.append(RevokeKey(value))
        elif kind == "threshold":
            target, sep, number = value.partition("=")
            role, _, stream = target.partition(":")
            if not sep or not number.isdigit() or int(number) < 1 or role not in ROLES:
                raise UsageError(f"--threshold {value!r}: use ROLE[:STREAM]=N")
            if (role == "publisher") != bool(stream):
                raise UsageError("--threshold publisher needs :STREAM; other roles take none")
            ops.append(
                SetThreshold(role, _identifier(stream, "stream") if stream else None, int(number))
            )
        elif kind in ("require_model_signature", "no_require_model_signature"):
            stream = _identifier(value, "stream")
            ops.append(RequireModelSignature(stream, kind == "require_model_signature"))
        elif kind == "rotate_root":
            keys = tuple(load_public_key(Path(v)) for v in value)
            threshold = args.root_threshold or 1
            if not 1 <= threshold <= len(keys):
                raise UsageError(f"--root-threshold must be between 1 and {len(keys)}")
            ops.append(RotateRoot(keys, threshold))
    if not ops:
        raise UsageError("a trust update needs at least one operation")
    if sum(isinstance(op, RotateRoot) for op in ops) > 1:
        raise UsageError("--rotate-root may be given once")
    return ops


def run_update(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    if args.version < 2:
        raise UsageError("--version: init is trust version 1, updates start at 2")
    ops = _operations(args)
    keys = [load_private_key(p) for p in args.key]
    update = TrustUpdate(args.version, utcnow(), tuple(ops))
    env = sign_envelope(TRUST_PAYLOAD_TYPE, update.to_payload(), keys)
    write_new_file(args.out, env.to_bytes())
    ctx.say(f"wrote trust update version {args.version} ({len(ops)} operation(s)) to {args.out}")
    return {
        "out": str(args.out),
        "version": args.version,
        "operations": [op.to_dict() for op in ops],
        "signers": sorted({k.keyid for k in keys}),
    }


def run_apply(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    home = Home(ctx.home)
    db = home.db()
    env = Envelope.from_bytes(read_input_file(args.file, MAX_FILE, "trust update"))
    with HomeLock(home, wait=args.wait):
        wpath = witness.configured_path(db, ctx.witness)
        check = witness.check(db, wpath)
        if check.status is witness.WitnessStatus.MISSING:
            witness.require_current(db, wpath)
        state = load_trust(db)
        witness.require_resync(db, check, "update", trust_version=state.version + 1)
        new = apply_trust_envelope(db, state, env, str(args.file))
        if wpath is not None:
            witness.refresh(db, wpath)
    ctx.say(f"applied trust update version {new.version}")
    return {"version": new.version}


def run_show(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    db = Home(ctx.home).db()
    state = load_trust(db)
    roles: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for kid, entry in sorted(state.keys.items()):
        roles.setdefault(entry.role, []).append(
            {"keyid": kid, "added_version": entry.added_version, "revoked": kid in state.revoked}
        )
    for role in state.thresholds:
        roles.setdefault(role, [])
    for kid, m in sorted(state.model_signers.items()):  # issue 17
        roles.setdefault(("model-signer", m.stream), []).append(
            {"keyid": kid, "added_version": m.added_version, "revoked": kid in state.revoked}
        )
    wcheck = witness.check(db, witness.configured_path(db, ctx.witness))
    out: dict[str, Any] = {
        "trust_version": state.version,
        "site": site(db),
        "roles": [
            {"role": r, "stream": s or None, "threshold": state.threshold((r, s)), "keys": keys}
            for (r, s), keys in sorted(roles.items())
        ],
        "revoked": sorted(state.revoked),
        "model_signature_required": sorted(state.model_signature_required),
        "streams": stream_sequences(db),
        "trusted_time": format_time(trusted_now(db)),
        "witness": {
            "status": wcheck.status.value,
            "path": str(wcheck.path) if wcheck.path else None,
            "detail": wcheck.detail,
        },
    }
    ctx.say(
        f"trust version {state.version}   site {out['site'] or 'unnamed'}   "
        f"trusted time {out['trusted_time']}"
    )
    for r in out["roles"]:
        live = [k for k in r["keys"] if not k["revoked"]]
        ctx.say(
            f"  {describe((r['role'], r['stream'] or '')):<24} threshold {r['threshold']}"
            f"  keys {len(live)} live, {len(r['keys']) - len(live)} revoked"
        )
        for k in r["keys"]:
            ctx.say(f"      {k['keyid'][:16]}  {'REVOKED' if k['revoked'] else 'live'}")
    for stream, seq in sorted(out["streams"].items()):
        ctx.say(f"  stream {stream}: sequence {seq}")
    for stream in out["model_signature_required"]:
        ctx.say(f"  stream {stream}: bundles need a valid model signature")
    ctx.say(f"  state witness: {wcheck.status.value} ({wcheck.detail})")
    return out
