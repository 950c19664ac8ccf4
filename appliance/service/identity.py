"""Who is on the other end of a Unix socket, from the kernel only.

``peer_identity(sock)`` reads ``SO_PEERCRED`` (uid, gid, pid as the kernel
recorded them at ``connect``), then resolves the user name (``pwd``; none for
a uid without a passwd entry), the executable (``/proc/PID/exe``) and the
systemd unit (``/proc/PID/cgroup``). Nothing the client sends is used.

PID reuse: the peer may exit and its pid be given to another process while we
read ``/proc``. Where the kernel has ``SO_PEERPIDFD`` (Linux 6.5+) we get a
pidfd for the very peer process; elsewhere we open one on the pid right
away. After reading ``/proc`` we check that the pidfd's process is still
alive: a live process keeps its pid, so what we read belongs to it. If it
has exited, ``exe`` and ``unit`` are reported as unknown (``None``) and a
grant that names a unit cannot match. uid and gid come from the socket
itself and are never subject to the race. Without ``SO_PEERPIDFD`` a peer
that died and had its pid reused before ``pidfd_open`` could be mistaken for
the new process: that window is documented in docs/PROTOCOL.md.

``exe`` needs ptrace-read rights on the peer (same uid, or
``CAP_SYS_PTRACE``); the service runs without that capability, so for other
users' processes ``exe`` is ``None`` and ``comm`` (``/proc/PID/comm``, which
anyone may read) is recorded instead. Authorization never uses ``exe``.
"""

from __future__ import annotations

import os
import pwd
import select
import socket
import struct
from dataclasses import dataclass
from typing import Any

SO_PEERPIDFD = getattr(socket, "SO_PEERPIDFD", 77)  # Linux 6.5+; Python 3.11 lacks the name
_UCRED = struct.Struct("3i")


@dataclass(frozen=True)
class Identity:
    """A loader as the kernel describes it; ``to_dict`` is what load events record."""

    uid: int
    gid: int
    pid: int
    user: str | None
    exe: str | None
    unit: str | None
    comm: str | None = None
    via: str = "direct"  # "direct" (own process) or "service" (a socket peer)

    def to_dict(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "gid": self.gid,
            "pid": self.pid,
            "user": self.user,
            "exe": self.exe,
            "unit": self.unit,
            "comm": self.comm,
            "via": self.via,
        }

    def principals(self) -> tuple[str, ...]:
        """The grant principals this identity answers to: its user name and its unit."""
        out: list[str] = []
        if self.user is not None:
            out.append(self.user)
        if self.unit is not None:
            out.append(f"unit:{self.unit}")
        return tuple(out)

    def describe(self) -> str:
        who = self.user if self.user is not None else f"uid {self.uid} (no passwd entry)"
        unit = f", unit {self.unit}" if self.unit else ""
        return f"{who} (pid {self.pid}{unit})"


def user_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def unit_of(cgroup_text: str) -> str | None:
    """The systemd ``.service`` unit from a ``/proc/PID/cgroup`` text (cgroup v2 or v1)."""
    if ".service" not in cgroup_text:  # the common case outside units: nothing to parse
        return None
    for line in cgroup_text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3 or parts[1] not in ("", "name=systemd"):
            continue
        unit = None
        for seg in parts[2].split("/"):
            if seg.endswith(".service"):
                unit = seg  # the innermost .service on the path
        if unit is not None:
            return unit
    return None


def _read_proc(pid: int, what: str) -> str | None:
    """``/proc/PID/exe`` (the link) or the text of ``/proc/PID/WHAT`` (its first 64 KiB);
    None when unreadable. By plain ``open``/``read`` (no buffered text file: a ``/proc``
    file gives its whole text to one read)."""
    try:
        if what == "exe":
            return os.readlink(f"/proc/{pid}/exe")
        fd = os.open(f"/proc/{pid}/{what}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = b""
            while len(data) < 65536:
                chunk = os.read(fd, 65536 - len(data))
                if not chunk:
                    break
                data += chunk
        finally:
            os.close(fd)
    except OSError:
        return None
    return data.decode("utf-8", errors="replace")


def _alive(pidfd: int) -> bool:
    """A pidfd polls readable once its process has exited."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return not poller.poll(0)


def _peer_pidfd(sock: socket.socket, pid: int) -> int | None:
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD, 4)
        fd = int(struct.unpack("i", raw)[0])
        if fd >= 0:
            return fd
    except OSError:
        pass  # older kernel: fall back to pidfd_open on the pid
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None  # the peer has already exited


def describe_process(uid: int, gid: int, pid: int, pidfd: int | None, via: str) -> Identity:
    exe = _read_proc(pid, "exe")
    cgroup = _read_proc(pid, "cgroup")
    comm = _read_proc(pid, "comm")
    if pidfd is None or not _alive(pidfd):
        exe, cgroup, comm = None, None, None  # the process is gone: its /proc is not its own
    return Identity(
        uid=uid,
        gid=gid,
        pid=pid,
        user=user_name(uid),
        exe=exe,
        unit=unit_of(cgroup) if cgroup else None,
        comm=comm.strip() if comm else None,
        via=via,
    )


def peer_identity(sock: socket.socket) -> Identity:
    """The identity of the process at the other end of a connected Unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    pidfd = _peer_pidfd(sock, pid) if pid > 0 else None
    try:
        return describe_process(uid, gid, pid, pidfd, "service")
    finally:
        if pidfd is not None:
            os.close(pidfd)


def self_identity() -> Identity:
    """This process, for direct loads (it reads the home itself)."""
    pid = os.getpid()
    try:
        pidfd: int | None = os.pidfd_open(pid)
    except OSError:
        pidfd = None
    try:
        return describe_process(os.getuid(), os.getgid(), pid, pidfd, "direct")
    finally:
        if pidfd is not None:
            os.close(pidfd)
