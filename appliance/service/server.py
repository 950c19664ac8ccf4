"""``appliance serve``: the one process that reads the home, handing verified descriptors out.

One thread runs the accept loop (``selectors``): it accepts, reads each
request line without blocking (so a client that sends nothing, or too much,
ties up no worker), and closes connections that stay silent past the request
timeout. A complete request goes to a worker pool; a worker resolves the
peer's identity from the kernel, runs the loader core's ``verified_open``
with the grant check as its gate, waits for the load event to be committed
(``appliance.service.journal``: group commit), and only then sends the reply
with the descriptor (``SCM_RIGHTS``). All database work shares one
read connection under one lock; the audit events go through a second
connection (the journal's), so its fsyncs never hold up reads; hashing runs
outside the lock, in parallel. ``EvidenceCache`` forgets what it verified
whenever another process commits (see ``appliance.service.cache``).

SIGTERM or SIGINT: stop accepting, refuse requests not yet started
(``service_stopping``), let started ones finish and their events commit,
stop the optional background component, exit 0. SIGKILL: SQLite's journal
rolls back any batch not yet committed on the next open; a descriptor is
never sent before its event is committed, so no load goes unrecorded.

``background``: an optional callable run in a thread as ``background(stop)``
(a ``threading.Event`` set at shutdown), e.g. the store watcher. If it
raises, the service logs it and stops (exit 3): fail closed.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import stat
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from appliance import witness
from appliance.errors import (
    BadActivationError,
    BadRequestError,
    ExitCode,
    InternalError,
    IOFailedError,
    RequestTimeoutError,
    RequestTooLargeError,
    ServiceBusyError,
    ServiceStoppingError,
    SocketInUseError,
    exit_code_for,
)
from appliance.home import Home
from appliance.loader import LoadedArtifact, load_event, verified_open
from appliance.service.cache import ChangeCounter, EvidenceCache
from appliance.service.grants import authorize
from appliance.service.identity import Identity, peer_identity
from appliance.service.journal import Journal
from appliance.service.protocol import MAX_REQUEST, error_reply, ok_reply, parse_request
from appliance.store import Record
from bundles.errors import ApplianceError, RejectedError, StateSuspectError

Background = Callable[[threading.Event], None]


def default_socket() -> Path:
    """``$APPLIANCE_SOCKET``, else ``/run/appliance/appliance.sock`` for root, else
    ``$XDG_RUNTIME_DIR/appliance.sock`` (``/run/user/UID`` when that is unset).
    """
    env = os.environ.get("APPLIANCE_SOCKET")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/run/appliance/appliance.sock")
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    return Path(runtime) / "appliance.sock"


def activated_sockets() -> list[socket.socket]:
    """Sockets passed by systemd socket activation (``LISTEN_PID``/``LISTEN_FDS``), if any."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return []
    try:
        count = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        count = 0
    for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(var, None)
    out = []
    for fd in range(3, 3 + count):
        s = socket.socket(fileno=fd)
        if s.family != socket.AF_UNIX or s.type != socket.SOCK_STREAM:
            raise BadActivationError(f"activated descriptor {fd} is not a Unix stream socket")
        os.set_inheritable(fd, False)
        out.append(s)
    return out


def bind_socket(path: Path) -> socket.socket:
    """Listen on ``path`` (mode 0666: anyone may ask; grants decide). A stale socket left by
    a killed service is replaced; a live one is ``socket_in_use``; a non-socket is refused.
    """
    try:
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise IOFailedError(f"cannot use {path}: {e.strerror}") from e
    if st is not None:
        if not stat.S_ISSOCK(st.st_mode):
            raise SocketInUseError(f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            os.unlink(path)
        else:
            raise SocketInUseError(f"another service is listening on {path}")
        finally:
            probe.close()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        s.bind(str(path))
        os.chmod(path, 0o666)
        s.listen(4096)
    except OSError as e:
        s.close()
        raise IOFailedError(f"cannot listen on {path}: {e.strerror}") from e
    return s


@dataclass
class Config:
    home: Home
    witness_path: Path | None = None
    workers: int = 32
    request_timeout: float = 5.0
    send_timeout: float = 5.0
    max_connections: int = 4096
    background: Background | None = None
    log: Callable[[str], None] = field(default=lambda line: print(line, file=sys.stderr))


@dataclass
class _Pending:
    conn: socket.socket
    since: float
    buf: bytearray = field(default_factory=bytearray)


class Server:
    """Serve loads on ``listeners`` until ``stop()`` (or SIGTERM via ``install_signals``)."""

    def __init__(self, config: Config, listeners: list[socket.socket]) -> None:
        self.config = config
        self.listeners = listeners
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.db = config.home.db()  # reads, under self.lock
        self.writer = config.home.db()  # the journal's own connection
        self.wpath = witness.configured_path(self.db, config.witness_path)
        self.counter = ChangeCounter(config.home.db_path)
        self.cache = EvidenceCache(self.db, self.counter)
        self.journal = Journal(self.writer, self.counter, self.wpath)
        self.served = 0
        self.refused = 0
        self._inflight = 0
        self._count_lock = threading.Lock()
        self.failure: BaseException | None = None

    # --- lifecycle --------------------------------------------------------------------

    def stop(self) -> None:
        self.stopping.set()

    def install_signals(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())

    def serve(self) -> int:
        """Run until stopped; returns the exit code (0 clean, 3 if the background failed)."""
        bg = self._start_background()
        pool = ThreadPoolExecutor(self.config.workers, thread_name_prefix="load")
        sel = selectors.DefaultSelector()
        pending: dict[int, _Pending] = {}
        for s in self.listeners:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, None)
        try:
            while not self.stopping.is_set():
                for key, _ in sel.select(timeout=0.2):
                    if key.data is None:
                        self._accept(key.fileobj, sel, pending, pool)  # type: ignore[arg-type]
                    else:
                        self._read(key.data, sel, pending, pool)
                self._expire(sel, pending)
        finally:
            for s in self.listeners:
                sel.unregister(s)
                s.close()
            for p in list(pending.values()):
                self._refuse(p.conn, ServiceStoppingError("the service is stopping"))
            sel.close()
            pool.shutdown(wait=True)  # started loads finish; their events commit below
            self.journal.stop()
            if bg is not None:
                bg.join(timeout=10)
            self.db.conn.close()
            self.writer.conn.close()
            self.counter.close()
        return ExitCode.OPERATIONAL if self.failure is not None else ExitCode.OK

    def _start_background(self) -> threading.Thread | None:
        task = self.config.background
        if task is None:
            return None

        def run() -> None:
            try:
                task(self.stopping)
            except Exception as e:  # noqa: BLE001  # fail closed: a dead watcher stops the service
                self.failure = e
                self.config.log(f"appliance serve: background component failed: {e!r}")
                self.config.log(traceback.format_exc())
                self.stop()

        t = threading.Thread(target=run, name="background", daemon=True)
        t.start()
        return t

    # --- the accept loop --------------------------------------------------------------

    def _accept(
        self,
        listener: socket.socket,
        sel: selectors.BaseSelector,
        pending: dict[int, _Pending],
        pool: ThreadPoolExecutor,
    ) -> None:
        for _ in range(256):
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # EMFILE and friends: try again on the next round
                self.config.log(f"appliance serve: accept failed: {e.strerror}")
                time.sleep(0.05)
                return
            if len(pending) + self._inflight >= self.config.max_connections:
                self._refuse(conn, ServiceBusyError("too many connections; try again"))
                continue
            conn.setblocking(False)
            p = _Pending(conn, time.monotonic())
            pending[conn.fileno()] = p
            sel.register(conn, selectors.EVENT_READ, p)
            self._read(p, sel, pending, pool)  # the line is usually there already: no round

    def _read(
        self,
        p: _Pending,
        sel: selectors.BaseSelector,
        pending: dict[int, _Pending],
        pool: ThreadPoolExecutor,
    ) -> None:
        try:
            chunk = p.conn.recv(MAX_REQUEST + 1 - len(p.buf))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
            p.buf.clear()
        p.buf += chunk
        end = p.buf.find(b"\n")
        error: ApplianceError | None = None
        if end < 0 and len(p.buf) > MAX_REQUEST - 1:
            error = RequestTooLargeError(f"a request is at most {MAX_REQUEST} bytes")
        elif end < 0 and not chunk:
            error = BadRequestError(
                "the connection closed before a request line" if not p.buf else "no newline"
            )
        elif end < 0:
            return
        sel.unregister(p.conn)
        del pending[p.conn.fileno()]
        if error is not None:
            self._refuse(p.conn, error)
            return
        line = bytes(p.buf[:end])
        p.conn.setblocking(True)
        p.conn.settimeout(self.config.send_timeout)
        with self._count_lock:
            self._inflight += 1
        pool.submit(self._handle, p.conn, line)

    def _expire(self, sel: selectors.BaseSelector, pending: dict[int, _Pending]) -> None:
        limit = time.monotonic() - self.config.request_timeout
        for fd, p in list(pending.items()):
            if p.since < limit:
                sel.unregister(p.conn)
                del pending[fd]
                self._refuse(p.conn, RequestTimeoutError("no request line in time"))

    def _refuse(self, conn: socket.socket, error: ApplianceError) -> None:
        try:
            conn.setblocking(False)
            conn.send(error_reply(error, exit_code_for(error)))
        except OSError:
            pass  # best effort: the peer is gone or not reading; closing is the answer
        finally:
            conn.close()
        self.refused += 1

    # --- one load ---------------------------------------------------------------------

    def _handle(self, conn: socket.socket, line: bytes) -> None:
        try:
            self._serve_one(conn, line)
        except Exception as e:  # noqa: BLE001  # last line of defence: replied and logged
            self.config.log(f"appliance serve: internal error: {e!r}\n{traceback.format_exc()}")
            err = InternalError(f"internal error ({e!r})")
            self._reply(conn, error_reply(err, ExitCode.OPERATIONAL))
        finally:
            conn.close()
            with self._count_lock:
                self._inflight -= 1

    def _reply(self, conn: socket.socket, data: bytes, fd: int | None = None) -> bool:
        try:
            if fd is None:
                conn.sendall(data)
            else:
                socket.send_fds(conn, [data], [fd])
            return True
        except OSError:
            return False

    def _serve_one(self, conn: socket.socket, line: bytes) -> None:
        if self.stopping.is_set():
            self._reply(conn, error_reply(ServiceStoppingError("the service is stopping"), 3))
            return
        who = peer_identity(conn)
        try:
            req = parse_request(line)
        except ApplianceError as e:
            self.refused += 1
            self._reply(conn, error_reply(e, exit_code_for(e)))
            return
        outcome = self._load(who, req.name, req.version, req.digest)
        if isinstance(outcome, ApplianceError):
            self.refused += 1
            self._reply(conn, error_reply(outcome, exit_code_for(outcome)))
            return
        art, seq = outcome
        with art:
            os.lseek(art.fd, 0, os.SEEK_SET)  # the loader reads from the start
            sent = self._reply(conn, ok_reply(art.to_dict(), art.record.to_dict(), seq), art.fd)
        if sent:
            self.served += 1
        else:  # the load is on record as verified; say that it never reached the loader
            fields = load_event(req.name, req.version, art.record, None, None, who)
            fields.update(outcome="failed", code="client_gone")
            self.journal.submit("load_undelivered", fields)

    def _load(
        self, who: Identity, name: str, version: str | None, digest: str | None
    ) -> tuple[LoadedArtifact, int] | ApplianceError:
        """The verified artifact and its committed event's ``seq``, or the refusal."""
        found: list[Record] = []

        def gate(rec: Record) -> None:  # today's grants, re-read when the evidence changed
            with self.lock:
                trust = self.cache.trust()
            authorize(trust, who, rec)

        try:
            art = verified_open(
                self.config.home,
                self.db,
                name,
                version,
                witness_path=self.wpath,
                digest=digest,
                gate=gate,
                provenance=self.cache.provenance,
                guard=lambda: self.lock,
                found=found,
                lookup=self.cache.find,
            )
        except (RejectedError, StateSuspectError) as e:
            fields = load_event(name, version, found[0] if found else None, None, e, who)
            self.journal.record("load", fields, refresh=not isinstance(e, StateSuspectError))
            return e
        except ApplianceError as e:  # usage (not_found) and operational: not events, as direct
            return e
        try:
            seq = self.journal.record("load", load_event(name, version, art.record, art, None, who))
        except BaseException:
            art.close()
            raise
        return art, seq


def serve(config: Config, socket_path: Path | None) -> int:
    """Listen (activated sockets, else ``socket_path``) and serve until SIGTERM."""
    listeners = activated_sockets()
    created: Path | None = None
    inode = None
    if not listeners:
        path = socket_path or default_socket()
        listeners = [bind_socket(path)]
        created, inode = path, os.stat(path).st_ino
    server = Server(config, listeners)
    server.install_signals()
    where = str(created) if created else f"{len(listeners)} activated socket(s)"
    config.log(f"appliance serve: listening on {where} (home {config.home.root})")
    try:
        return server.serve()
    finally:
        if created is not None:
            try:
                if os.stat(created).st_ino == inode:  # ours still: a successor's stays
                    created.unlink()
            except FileNotFoundError:
                pass
        config.log(f"appliance serve: stopped ({server.served} served, {server.refused} refused)")
