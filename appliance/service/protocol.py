"""The loader protocol: one JSON request line, one JSON reply line (see docs/PROTOCOL.md).

Pure encoding and validation, shared by the server and the Python client.
A request is one UTF-8 JSON object followed by ``\\n``, at most
``MAX_REQUEST`` bytes with the newline; a reply is one JSON object and
``\\n``, at most ``MAX_REPLY`` bytes, sent in one ``sendmsg`` that carries
the verified descriptor (``SCM_RIGHTS``) when ``ok`` is true.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from appliance.errors import BadRequestError, ExitCode, ServiceProtocolError
from bundles.errors import ApplianceError, BadNameError
from bundles.names import check_artifact_name, check_identifier

VERSION = 1
MAX_REQUEST = 4096
MAX_REPLY = 65536
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_FIELDS = {"v", "op", "name", "version", "digest"}


@dataclass(frozen=True)
class LoadRequest:
    name: str
    version: str | None = None
    digest: str | None = None

    def to_line(self) -> bytes:
        doc = {"v": VERSION, "op": "load", "name": self.name}
        if self.version is not None:
            doc["version"] = self.version
        if self.digest is not None:
            doc["digest"] = self.digest
        return json.dumps(doc, separators=(",", ":")).encode() + b"\n"


def parse_request(line: bytes) -> LoadRequest:
    """One request line (without its newline) -> ``LoadRequest``; ``BadRequestError`` else."""
    try:
        doc = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise BadRequestError(f"request is not UTF-8 JSON: {e}") from e
    if not isinstance(doc, dict):
        raise BadRequestError("request must be a JSON object")
    extra = set(doc) - _FIELDS
    if extra:
        raise BadRequestError(f"unknown request field(s): {', '.join(sorted(extra))}")
    if doc.get("v") != VERSION:
        raise BadRequestError(f"request v must be {VERSION}")
    if doc.get("op") != "load":
        raise BadRequestError('request op must be "load"')
    try:
        name = check_artifact_name(doc.get("name"))
        version = doc.get("version")
        if version is not None:
            version = check_identifier(version, "version")
    except BadNameError as e:
        raise BadRequestError(e.message) from e
    digest = doc.get("digest")
    if digest is not None and (not isinstance(digest, str) or not _HEX64.match(digest)):
        raise BadRequestError("digest must be 64 lowercase hex characters (BLAKE3)")
    return LoadRequest(name, version, digest)


def ok_reply(artifact: dict[str, Any], record: dict[str, Any], event: int) -> bytes:
    doc = {"ok": True, "artifact": artifact, "record": record, "event": event}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def error_reply(error: ApplianceError, exit_code: int) -> bytes:
    doc = {
        "ok": False,
        "error": {"code": error.code, "message": error.message[:4000]},
        "exit_code": int(exit_code),
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def parse_reply(data: bytes) -> dict[str, Any]:
    """A reply line -> its object; ``ServiceProtocolError`` for anything malformed."""
    if not data.endswith(b"\n") or len(data) > MAX_REPLY:
        raise ServiceProtocolError("the service's reply is truncated or too long")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ServiceProtocolError(f"the service's reply is not JSON: {e}") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("ok"), bool):
        raise ServiceProtocolError("the service's reply has no ok field")
    if not doc["ok"]:
        err = doc.get("error")
        code = doc.get("exit_code")
        if (
            not isinstance(err, dict)
            or not isinstance(err.get("code"), str)
            or not isinstance(err.get("message"), str)
            or code not in {int(c) for c in ExitCode if c != ExitCode.OK}
        ):
            raise ServiceProtocolError("the service's error reply is malformed")
    return doc
