"""``appliance bundle create`` and ``appliance bundle inspect`` (connected side).

JSON fields (with ``--json``; besides ``"ok": true``):

``bundle create OUT ...``
    ``path`` (str, OUT), ``format`` ("directory" | "tar"), ``stream`` (str),
    ``sequence`` (int), ``issued_at`` / ``expires`` (str, ``YYYY-MM-DDTHH:MM:SSZ``),
    ``sites`` (list of str), ``any_site`` (bool), ``signers`` (list of key ids,
    sorted), ``trust_updates`` (int, how many were carried), ``artifacts`` (list,
    see below).

``bundle inspect PATH [--key PUB ...] [--verify]``
    the same manifest fields (``path``, ``format``, ``stream``, ``sequence``,
    ``issued_at``, ``expires``, ``sites``, ``any_site``, ``artifacts``,
    ``trust_updates``), plus ``verified`` (bool: true only when a signature
    verified under a given ``--key``; without ``--key`` it is false, a warning
    goes to stderr and the exit code is 0), ``signers`` (key ids that verified,
    sorted), ``labels`` (each signer's root-signed label, or null), ``signatures``
    (list of ``{"keyid": str, "label": str | null, "known": bool, "verified":
    bool}``: ``known`` when the key id is one of the ``--key`` keys; ``label``
    from the signed trust of the home given by ``--home`` or ``$APPLIANCE_HOME``,
    null without one))
    and ``artifacts_verified`` (bool: true only after ``--verify`` re-hashed
    every artifact and found the files complete). With ``--key`` given and no
    signature verifying, the command fails with exit 1 and the specific code
    (``unknown_key``, ``bad_signature``, ``unsigned``...).

Each entry of ``artifacts``: ``name``, ``version``, ``release`` (int), ``size``
(int, bytes), ``media_type``, ``path`` (in the bundle), ``blake3`` (hex),
``sha256`` (hex or null), ``parts`` (int, 0 when not split).
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.cli.context import Context, path_arg
from bundles.errors import UsageError
from bundles.files import read_input_file

if TYPE_CHECKING:
    from appliance.modelsig.create import PlannedSignature
    from appliance.trust import TrustState
    from bundles.dsse import Envelope
    from bundles.manifest import Manifest

_SIZE = re.compile(r"^([0-9]{1,19})([KMGT]?)(?:i?B)?$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_MAX_TRUST_INPUT = 4 * 1024 * 1024


def parse_size(text: str) -> int:
    """``4G``, ``512M``, ``64K``, ``1000`` (binary units) -> bytes; at least 1."""
    m = _SIZE.match(text.strip())
    if not m or int(m.group(1)) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 4G, 512M or 1000")
    return int(m.group(1)) * _UNITS[m.group(2).upper()]


def register(subs: Any, common: argparse.ArgumentParser) -> None:
    bundle = subs.add_parser("bundle", parents=[common], help="make and inspect transfer bundles")
    bsubs = bundle.add_subparsers(
        dest="bundle_command", metavar="ACTION", parser_class=type(bundle)
    )

    create = bsubs.add_parser("create", parents=[common], help="write a signed bundle")
    create.add_argument(
        "out", type=path_arg, help="bundle directory to make (or tar file with --tar)"
    )
    create.add_argument("--stream", required=True, help="the publisher stream")
    create.add_argument("--sequence", required=True, type=int, help="bundle sequence (>= 1)")
    create.add_argument("--key", action="append", required=True, type=path_arg, help="signing key")
    create.add_argument("--expires", default="30d", help="duration (30d, 12h) or ISO 8601")
    where = create.add_mutually_exclusive_group()
    where.add_argument("--site", action="append", default=[], help="a target site id")
    where.add_argument("--any-site", action="store_true", help="valid at every site")
    create.add_argument("--trust-update", action="append", default=[], type=path_arg)
    create.add_argument("--tar", action="store_true", help="write one uncompressed tar")
    create.add_argument(
        "--part-size", type=parse_size, help="split bigger files (FAT32 holds under 4G: 4000M)"
    )
    create.add_argument("--media-type", action="append", default=[], metavar="NAME=TYPE")
    create.add_argument("--sha256", action="store_true", help="also list SHA-256 digests")
    create.add_argument(
        "--model-signature",
        action="append",
        default=[],
        metavar="NAME[@VERSION]=FILE.sig",
        help="carry an OpenSSF model signature of the artifacts NAME/... (docs/CLI.md)",
    )
    create.add_argument("artifacts", nargs="+", metavar="NAME@VERSION=PATH")
    create.set_defaults(func=bundle_create)

    inspect = bsubs.add_parser("inspect", parents=[common], help="show what a bundle holds")
    inspect.add_argument("path", type=path_arg, help="bundle directory or tar")
    inspect.add_argument("--key", action="append", default=[], type=path_arg, help="public key")
    inspect.add_argument("--verify", action="store_true", help="also re-hash every artifact")
    inspect.add_argument(
        "--model-key", action="append", default=[], type=path_arg, help="model-signer ECDSA key"
    )
    inspect.set_defaults(func=bundle_inspect)


def _parse_artifact(text: str) -> tuple[str, str, Path]:
    ref, sep, path = text.partition("=")
    name, at, version = ref.rpartition("@")
    if not sep or not at or not name or not version or not path:
        raise UsageError(f"artifact {text!r} must be NAME@VERSION=PATH")
    return name, version, Path(path)


def _read_trust_update(path: Path) -> bytes:
    data = read_input_file(path, _MAX_TRUST_INPUT, "trust update")
    if len(data) > _MAX_TRUST_INPUT:
        raise UsageError(f"{path} is too large to be a trust update")
    return data


def _artifact_rows(manifest: Manifest) -> list[dict[str, Any]]:
    return [
        {
            "name": a.name,
            "version": a.version,
            "release": a.release,
            "size": a.size,
            "media_type": a.media_type,
            "path": a.path,
            "blake3": a.blake3,
            "sha256": a.sha256,
            "parts": len(a.parts),
        }
        for a in manifest.artifacts
    ]


def _manifest_fields(manifest: Manifest) -> dict[str, Any]:
    from bundles.timeutil import format_time

    return {
        "stream": manifest.stream,
        "sequence": manifest.sequence,
        "issued_at": format_time(manifest.issued_at),
        "expires": format_time(manifest.expires),
        "sites": list(manifest.sites),
        "any_site": manifest.any_site,
        "artifacts": _artifact_rows(manifest),
    }


def _human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _say_manifest(ctx: Context, fields: dict[str, Any]) -> None:
    sites = "any site" if fields["any_site"] else ", ".join(fields["sites"])
    ctx.say(f"stream    {fields['stream']}  sequence {fields['sequence']}")
    ctx.say(f"issued    {fields['issued_at']}  expires {fields['expires']}")
    ctx.say(f"sites     {sites}")
    rows = fields["artifacts"]
    ctx.say(f"artifacts ({len(rows)}):")
    width = max(len(r["name"]) for r in rows)
    vwidth = max(len(r["version"]) for r in rows)
    if ctx.quiet:
        return
    # One ``say`` for the whole listing, as ``import`` and ``verify`` do (a line at a time
    # is two writes per artifact on an unbuffered stdout, 40,000 for 20,000 artifacts).
    ctx.say(
        "\n".join(
            f"  {r['name']:<{width}}  {r['version']:<{vwidth}}  {_human_size(r['size']):>10}"
            f"  blake3:{r['blake3'][:16]}" + (f"  ({r['parts']} parts)" if r["parts"] else "")
            for r in rows
        )
    )


def bundle_create(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    from bundles.keys import load_private_key
    from bundles.timeutil import parse_expiry
    from bundles.writer import ArtifactSpec, create_bundle

    if not args.site and not args.any_site:
        raise UsageError("bundle create: name the target sites with --site ID or say --any-site")
    specs = [ArtifactSpec(*_parse_artifact(a)) for a in args.artifacts]
    by_name = {s.name: s for s in specs}
    for item in args.media_type:
        name, sep, mtype = item.partition("=")
        if not sep or name not in by_name:
            raise UsageError(f"--media-type {item!r}: use NAME=TYPE with a NAME being bundled")
        by_name[name].media_type = mtype
    try:
        expires = parse_expiry(args.expires)
    except ValueError as e:
        raise UsageError(str(e)) from e
    keys = [load_private_key(p) for p in args.key]
    trust = [_read_trust_update(p) for p in args.trust_update]
    planned: list[PlannedSignature] = []
    check = None
    if args.model_signature:  # issue 17; its modules only when asked
        from appliance.modelsig.create import add_signatures, check_manifest, plan_signature

        planned = [plan_signature(t) for t in args.model_signature]
        add_signatures(specs, planned)
        check = check_manifest(planned)
    manifest = create_bundle(
        args.out,
        specs,
        stream=args.stream,
        sequence=args.sequence,
        keys=keys,
        expires=expires,
        sites=args.site,
        any_site=args.any_site,
        trust_updates=trust,
        tar=args.tar,
        part_size=args.part_size,
        sha256=args.sha256,
        check=check,
    )
    fields = _manifest_fields(manifest)
    signers = sorted({k.keyid for k in keys})
    ctx.say(f"wrote {'tar' if args.tar else 'bundle directory'} {args.out}")
    _say_manifest(ctx, fields)
    for keyid in signers:
        ctx.say(f"signed by {keyid}")
    for p in planned:
        ctx.say(f"model {p.model}: {len(p.files)} file(s) under its model signature")
    return {
        "path": str(args.out),
        "format": "tar" if args.tar else "directory",
        **fields,
        "signers": signers,
        "trust_updates": len(trust),
    }


def _home_trust(args: argparse.Namespace, ctx: Context) -> TrustState | None:
    """The signed trust of the home named by ``--home`` or ``$APPLIANCE_HOME`` (when one
    exists there), whose labels name the bundle's keys; None on the connected side."""
    from appliance.home import Home
    from appliance.truststore import signed_trust

    if getattr(args, "home", None) is None and not os.environ.get("APPLIANCE_HOME"):
        return None
    home = Home(ctx.home)
    if not home.exists():
        return None
    db = home.db()
    try:
        return signed_trust(db)
    finally:
        db.conn.close()


def bundle_inspect(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    from appliance.modelsig.check import describe_models, read_signature
    from appliance.trust import key_labels
    from bundles.keys import load_ec_public_key, load_public_key
    from bundles.media import open_media, printable
    from bundles.media_tar import TarSource
    from bundles.reader import Bundle, peek, read_trust_updates, verify_artifacts

    if args.verify and not args.key:
        raise UsageError("bundle inspect --verify needs --key PUB: signatures are checked first")
    keys = {k.keyid: k for k in (load_public_key(p) for p in args.key)}
    envelope: Envelope
    with open_media(args.path) as source:
        signers: frozenset[str] = frozenset()
        if keys:
            bundle = Bundle(source, keys.get)
            envelope, manifest, signers = bundle.envelope, bundle.manifest, bundle.signers
            if args.verify:
                bundle.check_files()
                verify_artifacts(bundle)
        else:
            envelope, manifest = peek(source)
        trust_count = len(read_trust_updates(source))
        fmt = "tar" if isinstance(source, TarSource) else "directory"
        models = describe_models(  # issue 17: who signed the model (as claimed)
            manifest,
            lambda a: read_signature(source, a),
            {k.keyid: k for k in (load_ec_public_key(p) for p in args.model_key)},
        )
    fields = _manifest_fields(manifest)
    names = _home_trust(args, ctx)  # issue 14: labels from the home's signed trust, if given
    signatures = [  # key ids come from the media: escape them before they are shown
        {
            "keyid": printable(s.keyid, 80),
            "label": names.label(s.keyid) if names else None,
            "known": s.keyid in keys,
            "verified": s.keyid in signers,
        }
        for s in envelope.signatures
    ]
    ctx.say(f"bundle    {args.path} ({fmt})")
    if not signers:
        ctx.warn("NOT VERIFIED: no signature was checked (give --key PUB to verify)")
    _say_manifest(ctx, fields)
    ctx.say(f"trust updates carried: {trust_count}")
    ctx.say(f"signatures ({len(signatures)}):")
    for s in signatures:
        state = "verified" if s["verified"] else ("not checked" if not keys else "unknown key")
        label = f"  ({s['label']})" if s["label"] else ""
        ctx.say(f"  {s['keyid']}{label}  {state}")
    if args.verify:
        ctx.say("artifacts verified: every file present, every BLAKE3 digest matches")
    for m in models:
        state = "verified" if m["verified"] else "signer not checked (give --model-key)"
        if m["problem"]:
            state = f"REFUSED [{m['problem']['code']}] {m['problem']['message']}"
        ctx.say(
            f"model {m['model']}: signed by {printable(str(m['keyid']), 80)}, {m['files']} "
            f"file(s), {m['hash_type']}; {state}"
        )
    return {
        "path": str(args.path),
        "format": fmt,
        **fields,
        "verified": bool(signers),
        "signers": sorted(signers),
        "labels": key_labels(sorted(signers), names),
        "signatures": signatures,
        "trust_updates": trust_count,
        "artifacts_verified": bool(args.verify),
        "model_signatures": models,
    }
