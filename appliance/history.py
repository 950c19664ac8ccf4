"""Incident response: everything the audit log says about one artifact, in time order.

``artifact_history(db, name)`` returns the store's versions of NAME (which is
active now) and its events: imports (with the signers, digest, stream,
sequence), active-version moves (rollbacks, with who authorized them, the
reason and the authorization id), loads with their verification result, and
refusals that name it (rejected rollbacks, refused loads). Each event is::

    {seq, ts, type, outcome, code, version, summary, signers, reason,
     from_version, to_version, authorization_id, digest, model_signer, detail}

``type`` is the audit type (``import``, ``rollback``, ``load``, ...);
``outcome`` is ``accepted``, ``rejected`` or, for loads, ``verified``;
``signers`` holds the key ids that signed (imports) or authorized
(rollbacks), else ``[]``; ``model_signer`` (imports of model-signed artifacts)
is ``{model, signature, keyid, label, hash_type, root_digest}``; fields that
do not apply are null; ``detail`` is
the audit event's full detail object; ``summary`` is one human line.
"""

from __future__ import annotations

from typing import Any

import sqlite_utils

from appliance import audit
from appliance.store import active_version, records

__all__ = ["artifact_history", "history_event"]


def _summary(e: dict[str, Any], d: dict[str, Any]) -> str:
    ref = f"{e['name']}@{e['version']}" if e["version"] else str(e["name"])
    kind, outcome = e["type"], e["outcome"]
    if outcome == "rejected":
        return f"{kind} of {ref} REFUSED [{e['code']}]: {d.get('message', '')}"
    if kind == "import":
        signers = ", ".join(s[:16] for s in d.get("signers", []))
        return (
            f"imported {ref} from stream {d.get('stream')} sequence {d.get('sequence')}, "
            f"signed by {signers}{_model_signer_text(d)}"
        )
    if kind == "rollback":
        who = ", ".join(s[:16] for s in d.get("authorized_by", []))
        return (
            f"active version moved {d.get('from_version')} -> {d.get('to_version')} by "
            f"rollback authorization {d.get('authorization_id')}, authorized by {who}: "
            f"{d.get('reason') or 'no reason given'}"
        )
    if kind == "load":
        return f"loaded {ref}: verified (BLAKE3 {str(d.get('digest', ''))[:16]})"
    return f"{kind} {ref}: {outcome}"


def _model_signer(d: dict[str, Any]) -> dict[str, Any] | None:
    """Issue 17: who signed the model (OpenSSF model signature) of an imported artifact."""
    m = d.get("model_signer")
    return m if isinstance(m, dict) else None


def _model_signer_text(d: dict[str, Any]) -> str:
    m = _model_signer(d)
    if m is None:
        return ""
    label = f" ({m['label']})" if m.get("label") else ""
    return f"; model signed by {str(m.get('keyid'))[:16]}{label}"


def history_event(event: dict[str, Any]) -> dict[str, Any]:
    """One audit row (as stored) in the history shape documented above."""
    d = audit.public_event(event)["detail"]
    if not isinstance(d, dict):
        d = {}
    is_rollback = event["type"] == "rollback"
    signers = d.get("authorized_by") if is_rollback else d.get("signers")
    return {
        "seq": event["seq"],
        "ts": event["ts"],
        "type": event["type"],
        "outcome": event["outcome"],
        "code": event["code"],
        "version": event["version"],
        "summary": _summary(event, d),
        "signers": list(signers) if isinstance(signers, list) else [],
        "reason": d.get("reason") if is_rollback else None,
        "from_version": d.get("from_version") if is_rollback else None,
        "to_version": d.get("to_version") if is_rollback else None,
        "authorization_id": d.get("authorization_id") if is_rollback else None,
        "digest": d.get("digest"),
        "model_signer": _model_signer(d),
        "detail": d,
    }


def artifact_history(db: sqlite_utils.Database, name: str) -> dict[str, Any]:
    """``{name, active, versions, events}`` for NAME; ``versions`` are store records."""
    return {
        "name": name,
        "active": active_version(db, name),
        "versions": [r.to_dict() for r in records(db, name)],
        "events": [history_event(e) for e in audit.rows(db, name)],
    }
