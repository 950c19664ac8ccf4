"""``appliance trust update|apply|show``.

``trust update`` (connected side) JSON: ``out``, ``version``, ``operations``,
``signers``. ``trust apply`` JSON: ``version``, ``operations``.
``trust show`` JSON: ``trust_version``, ``site``, ``roles`` (list of
``{role, stream, threshold, keys}``; ``model-signer`` rows hold ECDSA keys),
``revoked`` (key ids), ``model_signature_required`` (streams), ``streams``
(``{stream: sequence}``), ``trusted_time``, ``witness`` (``{status, path, detail}``),
``loader_grants`` (``{loader, stream, artifacts, any_version, trust_version, known}``).
"""

from __future__ import annotations

import argparse
import pwd
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from appliance import witness
from appliance.cli.context import Context, path_arg
from appliance.evidence import anchor_of
from appliance.home import Home, HomeLock
from appliance.importer import apply_trust_envelope
from appliance.trust import describe
from appliance.truststore import load_trust, site, stream_sequences, time_floors, trusted_now
from bundles.documents import (
    ROLES,
    TRUST_PAYLOAD_TYPE,
    AddKey,
    AddModelSigner,
    AllowLoader,
    DenyLoader,
    Operation,
    RequireModelSignature,
    ResetStream,
    ResetTime,
    RevokeKey,
    RotateRoot,
    SetThreshold,
    TrustUpdate,
    check_label,
    check_principal,
)
from bundles.dsse import Envelope, sign_envelope
from bundles.errors import BadNameError, ManifestFormatError, UsageError
from bundles.files import read_input_file, write_new_file
from bundles.keys import load_ec_public_key, load_private_key, load_public_key
from bundles.names import check_artifact_name, check_identifier
from bundles.timeutil import format_time, parse_iso, utcnow

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
        if ops and ops[-1]["op"] == "allow_loader" and self.dest in _GRANT_FIELDS:
            _bind_grant(ops[-1], self.dest, values)  # issue 11
        elif self.dest in _GRANT_FIELDS[1:]:
            raise UsageError(f"--{self.dest.replace('_', '-')} must follow an --allow-loader")
        elif self.dest in ("role", "stream", "name"):
            if not ops or ops[-1]["op"] != "add_key":
                raise UsageError(f"--{self.dest} must follow an --add-key")
            ops[-1][self.dest] = values
        else:
            ops.append({"op": self.dest, "value": values})
        ns.ops = ops


_GRANT_FIELDS = ("stream", "artifact", "any_version")


def _bind_grant(op: dict[str, Any], dest: str, values: Any) -> None:
    """Issue 11: --stream, --artifact, --any-version bind to the --allow-loader before them."""
    if dest == "artifact":
        op.setdefault("artifacts", []).append(values)
    elif dest == "any_version":
        op["any_version"] = True
    else:
        op[dest] = values


def register(subs: Any, common: argparse.ArgumentParser) -> None:
    trust = subs.add_parser("trust", parents=[common], help="trust updates and the trust store")
    ts = trust.add_subparsers(dest="trust_command", metavar="ACTION", parser_class=type(trust))

    up = ts.add_parser(
        "update",
        parents=[common],
        help="make a root-signed trust update",
        epilog="Operations apply in the order given; --role and --stream bind to the --add-key "
        "before them. Example: appliance trust update v2.json --version 2 --key root.key "
        "--add-key pub.pub --role publisher --stream models",
    )
    up.add_argument("out", type=path_arg, help="the trust update file to write")
    up.add_argument(
        "--version", type=int, required=True, help="the new trust version (current + 1)"
    )
    up.add_argument(
        "--key",
        type=path_arg,
        action="append",
        required=True,
        help="root private key (old and, for --rotate-root, new)",
    )
    up.add_argument(
        "--add-key", dest="add_key", action=_Op, metavar="PUB", help="add a public key (op)"
    )
    up.add_argument(
        "--role",
        dest="role",
        action=_Op,
        choices=("publisher", "rollback", "model-signer"),
        help="the role of the --add-key before it",
    )
    up.add_argument(
        "--stream", dest="stream", action=_Op, help="the stream of the --add-key before it"
    )
    up.add_argument(
        "--revoke", dest="revoke", action=_Op, metavar="KEYID", help="revoke a key (op)"
    )
    up.add_argument(
        "--threshold",
        dest="threshold",
        action=_Op,
        metavar="ROLE[:STREAM]=N",
        help="signatures a role needs (op)",
    )
    up.add_argument(
        "--rotate-root",
        dest="rotate_root",
        action=_Op,
        nargs="+",
        metavar="PUB",
        help="replace the root keys (op; sign with old and new)",
    )
    up.add_argument("--root-threshold", type=int, help="root threshold for --rotate-root")
    up.add_argument(
        "--name", dest="name", action=_Op, metavar="LABEL", help="a label for the --add-key before"
    )
    up.add_argument(
        "--reset-stream",
        dest="reset_stream",
        action=_Op,
        metavar="STREAM=N",
        help="recovery (op): set STREAM's high-water mark back to N",
    )
    up.add_argument(
        "--reset-time",
        dest="reset_time",
        action=_Op,
        metavar="ISO8601",
        help="recovery (op): set every trusted-time floor back to this time",
    )
    up.add_argument(
        "--allow-loader",
        dest="allow_loader",
        action=_Op,
        metavar="USER",
        help="grant USER or unit:NAME.service loads through the service (op)",
    )
    up.add_argument(
        "--artifact", dest="artifact", action=_Op, metavar="NAME", help="limit the grant before"
    )
    up.add_argument(
        "--any-version",
        dest="any_version",
        action=_Op,
        nargs=0,
        help="the grant before covers every stored version, not only the active one",
    )
    up.add_argument(
        "--deny-loader", dest="deny_loader", action=_Op, metavar="USER", help="withdraw grants (op)"
    )
    up.add_argument(  # issue 17
        "--require-model-signature",
        dest="require_model_signature",
        action=_Op,
        metavar="STREAM",
        help="bundles of STREAM need a valid OpenSSF model signature (op)",
    )
    up.add_argument(
        "--no-require-model-signature",
        dest="no_require_model_signature",
        action=_Op,
        metavar="STREAM",
    )
    up.set_defaults(func=run_update, ops=None)

    ap = ts.add_parser("apply", parents=[common], help="apply a trust update file")
    ap.add_argument("file", type=path_arg)
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
            label = raw.get("name")
            if label is not None:
                try:
                    check_label(label, "--name")
                except ManifestFormatError as e:
                    raise UsageError(e.message) from e
            ops.append(
                AddKey(
                    load_public_key(Path(value)),
                    role,
                    _identifier(stream, "stream") if stream else None,
                    label,
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
        elif kind == "reset_stream":
            stream, sep, number = value.partition("=")
            if not sep or not number.isdigit():
                raise UsageError(f"--reset-stream {value!r}: use STREAM=N")
            ops.append(ResetStream(_identifier(stream, "stream"), int(number)))
        elif kind == "reset_time":
            try:
                ops.append(ResetTime(parse_iso(value)))
            except ValueError as e:
                raise UsageError(f"--reset-time {value!r}: {e}") from e
        elif kind in ("require_model_signature", "no_require_model_signature"):
            stream = _identifier(value, "stream")
            ops.append(RequireModelSignature(stream, kind == "require_model_signature"))
        elif kind == "rotate_root":
            keys = tuple(load_public_key(Path(v)) for v in value)
            threshold = args.root_threshold or 1
            if not 1 <= threshold <= len(keys):
                raise UsageError(f"--root-threshold must be between 1 and {len(keys)}")
            ops.append(RotateRoot(keys, threshold))
        elif kind in ("allow_loader", "deny_loader"):
            ops.append(_grant_op(raw))
    if not ops:
        raise UsageError("a trust update needs at least one operation")
    if sum(isinstance(op, RotateRoot) for op in ops) > 1:
        raise UsageError("--rotate-root may be given once")
    return ops


def _grant_op(raw: dict[str, Any]) -> Operation:
    """Issue 11: ``--allow-loader USER --stream S [--artifact NAME ...] [--any-version]``."""
    try:
        principal = check_principal(raw["value"], f"--{raw['op'].replace('_', '-')}")
        if raw["op"] == "deny_loader":
            return DenyLoader(principal)
        if raw.get("stream") is None:
            raise UsageError(f"--allow-loader {raw['value']} needs a --stream")
        artifacts = tuple(check_artifact_name(a) for a in raw.get("artifacts", []))
        return AllowLoader(
            principal,
            check_identifier(raw["stream"], "stream"),
            tuple(dict.fromkeys(artifacts)),
            bool(raw.get("any_version")),
        )
    except (BadNameError, ManifestFormatError) as e:
        raise UsageError(e.message) from e


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
        warnings = witness.refresh_after_commit(db, wpath)
    ctx.say(f"applied trust update version {new.version}")
    for w in warnings:
        ctx.warn(f"appliance: warning: {w}")
    return {"version": new.version, **({"warnings": warnings} if warnings else {})}


def _grant_view(grant: dict[str, Any]) -> dict[str, Any]:
    """A grant as shown, with ``known``: is its user (or unit) resolvable on this host."""
    loader = str(grant["loader"])
    if loader.startswith("unit:"):
        return {**grant, "known": True}
    try:
        pwd.getpwnam(loader)
    except KeyError:
        return {**grant, "known": False}
    return {**grant, "known": True}


def run_show(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    db = Home(ctx.home).db()
    state = load_trust(db)
    roles: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for kid, entry in sorted(state.keys.items()):
        roles.setdefault(entry.role, []).append(
            {
                "keyid": kid,
                "label": state.label(kid),
                "added_version": entry.added_version,
                "revoked": kid in state.revoked,
            }
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
        "time_floors": time_floors(db).to_dict(),
        "anchor": anchor_of(db).describe(),
        "loader_grants": [_grant_view(g.to_dict()) for g in state.grants],
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
            label = f"  ({k['label']})" if k.get("label") else ""
            ctx.say(f"      {k['keyid'][:16]}  {'REVOKED' if k['revoked'] else 'live'}{label}")
    for stream, seq in sorted(out["streams"].items()):
        ctx.say(f"  stream {stream}: sequence {seq}")
    for g in out["loader_grants"]:
        ctx.say(
            f"  loader {g['loader']}: stream {g['stream']}, "
            f"{', '.join(g['artifacts']) or 'every artifact'}, "
            f"{'any stored version' if g['any_version'] else 'active version only'}"
            f"{'' if g['known'] else ' (no such user on this host)'}"
        )
    for stream in out["model_signature_required"]:
        ctx.say(f"  stream {stream}: bundles need a valid model signature")
    ctx.say(f"  state witness: {wcheck.status.value} ({wcheck.detail})")
    ctx.say(f"  trust anchor: {out['anchor']['path']}")
    return out
