#!/usr/bin/env python3
"""A complete loader for the appliance service, in plain Python (no appliance import).

    loader_client.py SOCKET NAME [VERSION] [--digest HEX] > out

Speaks docs/PROTOCOL.md: one request line, one reply line with the verified
descriptor attached (SCM_RIGHTS). Writes the artifact's bytes to stdout and
exits with the service's exit code on a refusal.
"""

import json
import os
import socket
import sys


def load(path, name, version=None, digest=None):
    request = {"v": 1, "op": "load", "name": name}
    if version:
        request["version"] = version
    if digest:
        request["digest"] = digest
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.sendall(json.dumps(request).encode() + b"\n")
    reply, fds = b"", []
    while not reply.endswith(b"\n"):
        data, got, _flags, _addr = socket.recv_fds(s, 65536, 1)
        fds += got
        if not data:
            break
        reply += data
    s.close()
    doc = json.loads(reply)
    if not doc["ok"]:
        for fd in fds:
            os.close(fd)
        return doc, None
    if len(fds) != 1:
        raise SystemExit("protocol error: expected one descriptor")
    return doc, fds[0]


def main(argv):
    digest = None
    if "--digest" in argv:
        i = argv.index("--digest")
        digest = argv[i + 1]
        del argv[i : i + 2]
    path, name = argv[0], argv[1]
    version = argv[2] if len(argv) > 2 else None
    doc, fd = load(path, name, version, digest)
    if fd is None:
        err = doc["error"]
        print(f"refused [{err['code']}]: {err['message']}", file=sys.stderr)
        return doc["exit_code"]
    size, offset = doc["artifact"]["size"], 0
    while offset < size:  # pread: the offset of the shared descriptor is not ours to move
        chunk = os.pread(fd, min(1 << 20, size - offset), offset)
        if not chunk:
            raise SystemExit("short descriptor")
        sys.stdout.buffer.write(chunk)
        offset += len(chunk)
    os.close(fd)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
