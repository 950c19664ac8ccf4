"""Incident response: everything the audit log says about one artifact, in time order.

``artifact_history(db, name)`` returns the store's versions of NAME (which is
active now) and its events: imports (with the signers, digest, stream,
sequence), active-version moves (rollbacks, with who authorized them, the
reason and the authorization id), loads with their verification result, and
refusals that name it (rejected rollbacks, refused loads). Each event is::

    {seq, ts, trusted_time, type, outcome, code, version, summary, signers, labels,
     reason, from_version, to_version, authorization_id, digest, loader, model_signer,
     detail}

``type`` is the audit type (``import``, ``rollback``, ``load``, ...);
``outcome`` is ``accepted``, ``rejected`` or, for loads, ``verified``;
``signers`` holds the key ids that signed (imports) or authorized
(rollbacks), else ``[]``; ``labels`` lists ``{keyid, label}`` for each of them
(the root-signed label, null when it has none; from the signed trust state,
never a table);
``ts`` is the event's time stamp and ``trusted_time`` the trusted time then
(``detail.trusted_time``, docs/AUDIT.md); events are in chain order;
``model_signer`` (imports of model-signed artifacts) is ``{model, signature,
keyid, label, hash_type, root_digest}``; fields that do not apply are null;
``detail`` is the audit event's full detail object; ``summary`` is one human line.
``loader`` (load events): who loaded, ``{uid, gid, pid, user, exe, unit,
comm, via}`` (``via`` is ``direct`` or ``service``), else null.
Refused imports whose manifest named NAME (issue 14) are events too, with
``outcome`` ``rejected``, the error ``code``, ``claimed_version`` (the version
that manifest listed for NAME) and ``authenticated`` (false: the manifest's
signature check had not passed, so the names are only a claim); both are
null for other events.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from appliance import audit
from appliance.db import Database
from appliance.store import active_version, records
from appliance.trust import TrustState, key_labels, labels_text
from appliance.truststore import naming_trust
from bundles.timeutil import format_time

__all__ = ["active_at", "artifact_history", "event_keys", "history_event", "store_at"]


def _by(loader: Any) -> str:
    """Issue 11: " by USER (uid U, pid P, unit X, via service)" for load events that say who."""
    if not isinstance(loader, dict):
        return ""
    who = loader.get("user") or f"uid {loader.get('uid')}"
    unit = f", unit {loader['unit']}" if loader.get("unit") else ""
    return (
        f" by {who} (uid {loader.get('uid')}, pid {loader.get('pid')}{unit}, "
        f"{loader.get('via', 'direct')})"
    )


def claimed(d: dict[str, Any], name: str | None) -> dict[str, Any] | None:
    """The ``{name, version}`` a refused import's manifest listed for ``name``, if any."""
    listed = d.get("artifacts")
    if name is None or not isinstance(listed, list):
        return None
    return next((a for a in listed if isinstance(a, dict) and a.get("name") == name), None)


def _keys(ids: Any, keys: TrustState | None) -> str:
    return labels_text(key_labels([str(k) for k in ids] if isinstance(ids, list) else [], keys))


KEY_FIELDS = ("signers", "authorized_by", "root_keys")  # audit detail fields of key ids


def event_keys(d: dict[str, Any]) -> list[str]:
    """The key ids an audit event's detail names (signers, authorizers, root keys), in
    order, each once."""
    out: dict[str, None] = {}
    for f in KEY_FIELDS:
        listed = d.get(f)
        if isinstance(listed, list):
            out.update((str(k), None) for k in listed)
    return list(out)


def _summary(
    e: dict[str, Any], d: dict[str, Any], name: str | None, keys: TrustState | None
) -> str:
    ref = f"{e['name']}@{e['version']}" if e["version"] else str(e["name"])
    kind, outcome = e["type"], e["outcome"]
    named = claimed(d, name) if e["name"] is None else None
    if outcome == "rejected" and named is not None:
        how = "" if d.get("authenticated") else " (UNAUTHENTICATED: its signature check failed)"
        return (
            f"{kind} of a bundle naming {name}@{named.get('version')}{how} REFUSED "
            f"[{e['code']}]: {d.get('message', '')}"
        )
    if outcome == "rejected":
        return (
            f"{kind} of {ref} REFUSED [{e['code']}]{_by(d.get('loader'))}: {d.get('message', '')}"
        )
    if kind == "import":
        signers = _keys(d.get("signers"), keys)
        return (
            f"imported {ref} from stream {d.get('stream')} sequence {d.get('sequence')}, "
            f"signed by {signers}{_model_signer_text(d, keys)}"
        )
    if kind == "rollback":
        who = _keys(d.get("authorized_by"), keys)
        return (
            f"active version moved {d.get('from_version')} -> {d.get('to_version')} by "
            f"rollback authorization {d.get('authorization_id')}, authorized by {who}: "
            f"{d.get('reason') or 'no reason given'}"
        )
    if kind == "load":
        return (
            f"loaded {ref}: verified (BLAKE3 {str(d.get('digest', ''))[:16]}){_by(d.get('loader'))}"
        )
    if kind == "load_undelivered":
        why = (
            "the loader went away before the reply"
            if e["code"] == "client_gone"
            else "the witness could not be brought forward"
        )
        return f"{ref} NOT handed over [{e['code']}]{_by(d.get('loader'))}: {why}"
    return f"{kind} {ref}: {outcome}"


def _model_signer(d: dict[str, Any]) -> dict[str, Any] | None:
    """Issue 17: who signed the model (OpenSSF model signature) of an imported artifact."""
    m = d.get("model_signer")
    return m if isinstance(m, dict) else None


def _model_signer_text(d: dict[str, Any], keys: TrustState | None) -> str:
    m = _model_signer(d)
    if m is None:
        return ""
    return f"; model signed by {_keys([m.get('keyid')], keys)}"


def history_event(
    event: dict[str, Any], name: str | None = None, keys: TrustState | None = None
) -> dict[str, Any]:
    """One audit row (as stored) in the history shape documented above (``name``: the
    artifact the history is of, for refused imports that only named it; ``keys``: the
    signed trust state whose labels name the signers)."""
    d = audit.detail_of(event)
    named = claimed(d, name) if event["name"] is None else None
    is_rollback = event["type"] == "rollback"
    signers = d.get("authorized_by") if is_rollback else d.get("signers")
    ids = [str(k) for k in signers] if isinstance(signers, list) else []
    return {
        "seq": event["seq"],
        "ts": event["ts"],
        "type": event["type"],
        "outcome": event["outcome"],
        "code": event["code"],
        "version": event["version"],
        "trusted_time": d.get("trusted_time"),
        "summary": _summary(event, d, name, keys),
        "signers": ids,
        "labels": key_labels(ids, keys),
        "reason": d.get("reason") if is_rollback else None,
        "from_version": d.get("from_version") if is_rollback else None,
        "to_version": d.get("to_version") if is_rollback else None,
        "authorization_id": d.get("authorization_id") if is_rollback else None,
        "digest": d.get("digest"),
        "loader": d.get("loader") if isinstance(d.get("loader"), dict) else None,
        "model_signer": _model_signer(d),
        "claimed_version": named.get("version") if named is not None else None,
        "authenticated": bool(d.get("authenticated")) if named is not None else None,
        "detail": d,
    }


def _moves(event: dict[str, Any]) -> bool:
    """An audited event that set the active version (an activating import or a rollback)."""
    if event["outcome"] != "accepted" or event["type"] not in ("import", "rollback"):
        return False
    return event["type"] == "rollback" or bool(audit.detail_of(event).get("activated"))


def active_at(db: Database, at: datetime) -> dict[str, str]:
    """Which version of each artifact was active at ``at``, replayed from the audit log in
    chain order (time stamps never run backwards along the chain)."""
    return store_at(db, at)[0]


def store_at(
    db: Database, at: datetime, name: str | None = None
) -> tuple[dict[str, str], set[tuple[str, str]]]:
    """The store at ``at`` as the audit log tells it, in one walk in chain order: the
    active version of each name, and the (name, version) of every accepted import by
    then. Not the records' ``imported_at`` column: one SQL statement changes that without
    a trace, where an edited event breaks the chain (``audit verify``). ``name``: that
    name's events only."""
    stamp = format_time(at)
    active: dict[str, str] = {}
    imported: set[tuple[str, str]] = set()
    for e in audit.rows(db) if name is None else audit.rows_naming(db, name):
        if e["ts"] > stamp:
            break
        if not (e["name"] and e["version"]):
            continue
        if e["type"] == "import" and e["outcome"] == "accepted":
            imported.add((e["name"], e["version"]))
        if _moves(e):
            active[e["name"]] = e["version"]
    return active, imported


def artifact_history(db: Database, name: str, at: datetime | None = None) -> dict[str, Any]:
    """``{name, active, versions, events, unvouched_from, labels_error}`` for NAME.

    ``versions`` are store records; with ``at``, only what had happened by then (the
    active version then, records imported by then, events up to then). Each event says
    ``verified``: false from the first event that a broken audit chain no longer vouches
    for (``unvouched_from``, null when the chain verifies). ``labels_error`` says why
    signers have no labels when the signed trust chain cannot be derived (else null).
    """
    broken = audit.first_unvouched(db)
    keys, labels_error = naming_trust(db)
    stamp = format_time(at) if at is not None else None
    events = []
    for e in audit.rows_naming(db, name):
        if stamp is not None and e["ts"] > stamp:
            break
        h = history_event(e, name, keys)
        h["verified"] = broken is None or e["seq"] < broken
        events.append(h)
    if at is None:
        versions = [r.to_dict() for r in records(db, name)]
        active = active_version(db, name)
    else:
        then, imported = store_at(db, at, name)
        versions = [r.to_dict() for r in records(db, name) if (r.name, r.version) in imported]
        active = then.get(name)
    for v in versions:
        v["active"] = v["version"] == active
    return {
        "name": name,
        "at": stamp,
        "active": active,
        "versions": versions,
        "events": events,
        "unvouched_from": broken,
        "labels_error": labels_error,
    }
