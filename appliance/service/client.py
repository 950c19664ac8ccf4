"""The Python client of the loader service: ``request_load`` -> ``LoadedArtifact``.

It speaks docs/PROTOCOL.md: connect, send one request line, read one reply
line with the descriptor attached (``SCM_RIGHTS``, received close-on-exec).
A refusal is raised as the same exception class (same ``code``, same exit
code) a direct load raises. The descriptor is checked before it is returned:
exactly one, the announced size, and for ``sealed_memfd`` the write, grow and
shrink seals in place, so not even the service can change it afterwards.
"""

from __future__ import annotations

import fcntl
import os
import socket
from functools import cache
from pathlib import Path
from typing import Any

from appliance.errors import (
    ServiceProtocolError,
    ServiceUnavailableError,
)
from appliance.loader import LoadedArtifact
from appliance.sealed import SEALS
from appliance.service.protocol import MAX_REPLY, LoadRequest, parse_reply
from appliance.store import Record
from bundles.errors import (
    ApplianceError,
    OperationalError,
    RejectedError,
    StateSuspectError,
    UsageError,
)

_BY_EXIT: dict[int, type[ApplianceError]] = {
    1: RejectedError,
    2: UsageError,
    3: OperationalError,
    4: StateSuspectError,
}


def _subclasses(cls: type[ApplianceError]) -> list[type[ApplianceError]]:
    out = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_subclasses(sub))
    return out


def _exit_of(cls: type[ApplianceError]) -> int:
    """``exit_code_for`` on a class (the same order of roots)."""
    for root, code in ((StateSuspectError, 4), (RejectedError, 1), (UsageError, 2)):
        if issubclass(cls, root):
            return code
    return 3


@cache
def _classes() -> dict[tuple[str, int], type[ApplianceError]]:
    import appliance.provenance  # noqa: F401  (its classes may be named in a reply)

    table: dict[tuple[str, int], type[ApplianceError]] = {}
    for cls in _subclasses(ApplianceError):
        table.setdefault((cls.code, _exit_of(cls)), cls)
    return table


def error_from_reply(doc: dict[str, Any]) -> ApplianceError:
    """The exception a refusal reply stands for: its code's class, or a root class."""
    code, message = doc["error"]["code"], doc["error"]["message"]
    exit_code = int(doc["exit_code"])
    cls = _classes().get((code, exit_code))
    if cls is not None:
        return cls(message)
    # a code this client does not know (a newer service): keep the code and the exit code
    remote: type[ApplianceError] = type("RemoteError", (_BY_EXIT[exit_code],), {"code": code})
    return remote(message)


def _connect(path: Path, timeout: float) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    s.settimeout(timeout)
    try:
        s.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError, PermissionError, OSError) as e:
        s.close()
        raise ServiceUnavailableError(f"no loader service at {path} ({e.strerror or e})") from e
    return s


def _exchange(s: socket.socket, line: bytes) -> tuple[bytes, list[int]]:
    s.sendall(line)
    data = bytearray()
    fds: list[int] = []
    while not data.endswith(b"\n"):
        if len(data) > MAX_REPLY:
            break
        msg, got, flags, _ = socket.recv_fds(s, MAX_REPLY, 4, socket.MSG_CMSG_CLOEXEC)
        fds.extend(got)
        if flags & socket.MSG_CTRUNC:
            for fd in fds:
                os.close(fd)
            raise ServiceProtocolError("the service's reply carried too many descriptors")
        if not msg:
            break
        data += msg
    return bytes(data), fds


def _check_fd(fd: int, art: dict[str, Any]) -> None:
    st = os.fstat(fd)
    if st.st_size != art["size"]:
        raise ServiceProtocolError(
            f"the descriptor holds {st.st_size} bytes, the reply says {art['size']}"
        )
    if art["copy"] == "sealed_memfd":
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
        if seals & SEALS != SEALS:
            raise ServiceProtocolError("the descriptor is not a sealed copy")


def request_load(
    path: Path,
    name: str,
    version: str | None = None,
    *,
    digest: str | None = None,
    timeout: float = 300.0,
) -> LoadedArtifact:
    """Ask the service at ``path`` for NAME[@VERSION]; the same object a direct load returns."""
    s = _connect(path, timeout)
    try:
        try:
            data, fds = _exchange(s, LoadRequest(name, version, digest).to_line())
        except TimeoutError as e:
            raise ServiceUnavailableError(f"the loader service at {path} did not answer") from e
        except OSError as e:
            raise ServiceUnavailableError(
                f"the loader service at {path} closed the connection ({e.strerror})"
            ) from e
    finally:
        s.close()
    try:
        if not data:
            raise ServiceUnavailableError(f"the loader service at {path} closed without a reply")
        doc = parse_reply(data)
        if not doc["ok"]:
            raise error_from_reply(doc)
        if len(fds) != 1:
            raise ServiceProtocolError(f"a verified reply carries 1 descriptor, not {len(fds)}")
        art, rec = doc["artifact"], doc["record"]
        _check_fd(fds[0], art)
        record = Record(
            name=rec["name"],
            version=rec["version"],
            digest=rec["digest"]["blake3"],
            size=int(rec["size"]),
            media_type=rec["media_type"],
            release=int(rec["release"]),
            stream=rec["stream"],
            sequence=int(rec["sequence"]),
            signers=tuple(rec["signers"]),
            imported_at=rec["imported_at"],
            active=bool(rec["active"]),
        )
        if digest is not None and record.digest != digest:
            raise ServiceProtocolError("the service served another digest than the pinned one")
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return LoadedArtifact(
        record.name,
        record.version,
        record.digest,
        record.size,
        fds[0],
        art["copy"] == "sealed_memfd",
        record,
    )
