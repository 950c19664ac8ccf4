"""``appliance serve``: the one process that reads the home, handing verified descriptors out.

One thread runs the accept loop (``selectors``): it accepts, reads each
request line without blocking (so a client that sends nothing, or too much,
ties up no worker), and closes connections that stay silent past the request
timeout. A complete request is served by the accept loop itself when its
line last named an object of at most ``INLINE_MAX`` bytes and no witness is
configured (a tiny load then costs no hand-over between threads), else by a
worker of a pool; a request the loop took for small that names a large
record goes to a worker before anything is opened. Either way the same
steps: the peer's identity from the kernel, the loader core's
``verified_open`` with the grant check as its gate, the load event queued for
the group commit (``appliance.service.journal``). The journal thread sends
the reply with the descriptor (``SCM_RIGHTS``) right after that commit, from
the event's ``Future`` callback, so only once the event is on record; a
reader not ready to take the reply at once gets it from a thread of its own
(the journal never waits on a client). All database reads share one read
connection under one lock; the audit events go through a second connection
(the journal's), so its fsyncs never hold up reads; hashing runs outside the
lock. ``EvidenceCache`` forgets what it verified whenever another process
commits (see ``appliance.service.cache``).

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
import sqlite3
import stat
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from appliance import witness
from appliance.db import sqlite_errors
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
from appliance.loader import LoadedArtifact, load_event, undelivered_event, verified_open
from appliance.service.cache import ChangeCounter, EvidenceCache
from appliance.service.grants import authorize
from appliance.service.identity import Identity, peer_identity
from appliance.service.journal import Journal, Unwitnessed
from appliance.service.protocol import (
    MAX_REQUEST,
    LoadRequest,
    error_reply,
    ok_reply,
    parse_request,
)
from appliance.store import Record
from bundles.errors import ApplianceError, RejectedError, StateSuspectError

Background = Callable[[threading.Event], None]
INLINE_MAX = 1 << 16  # objects up to this size are served in the accept loop (``_inline``)


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


@dataclass
class SocketFile:
    """The socket file this process bound, removed once on the way out if it is still
    this one. Only while the listener is open: an open socket holds its file's inode, so
    the same number at the path is ours; after the close the number may be freed and
    given to a successor's socket, which must stay."""

    path: Path
    ino: int
    removed: bool = False

    @classmethod
    def of(cls, path: Path) -> SocketFile:
        return cls(path, os.stat(path).st_ino)

    def remove(self) -> None:
        if self.removed:
            return
        self.removed = True
        try:
            if os.stat(self.path).st_ino == self.ino:  # ours still: a successor's stays
                self.path.unlink()
        except FileNotFoundError:
            pass


def close_listeners(listeners: list[socket.socket], made: SocketFile | None) -> None:
    """Close ``listeners`` of a service that never served, removing its socket file first."""
    if made is not None:
        made.remove()
    for s in listeners:
        s.close()


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


class _TooLarge(Exception):
    """A request the accept loop took for a small load names a large object."""


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
    """Serve loads on ``listeners`` until ``stop()`` (or its ``stopping`` event is set:
    ``serve``'s SIGTERM and SIGINT handlers)."""

    def __init__(
        self,
        config: Config,
        listeners: list[socket.socket],
        socket_file: SocketFile | None = None,
        stopping: threading.Event | None = None,
    ) -> None:
        """``stopping``: set by whoever stops this server (``serve``'s signal handlers,
        installed before the socket exists); else its own."""
        self.config = config
        self.listeners = listeners
        self.socket_file = socket_file  # removed on the way out, if still ours
        self.stopping = stopping if stopping is not None else threading.Event()
        self.lock = threading.Lock()
        self.db = config.home.db()  # reads, under self.lock
        self.writer = config.home.db()  # the journal's own connection
        self.wpath = witness.configured_path(self.db, config.witness_path)
        self.counter = ChangeCounter(config.home.db_path)
        self.cache = EvidenceCache(self.db, self.counter)
        self.journal = Journal(self.writer, self.counter, self.wpath)
        self.served = 0
        self.refused = 0
        self.handed_to_workers = 0  # requests the accept loop did not serve itself
        self._inflight = 0
        self._count_lock = threading.Lock()
        self.failure: BaseException | None = None
        self._sizes: dict[bytes, int] = {}  # request line -> object size, for ``_inline``
        self._parsed: dict[bytes, LoadRequest] = {}  # request line -> its parse

    # --- lifecycle --------------------------------------------------------------------

    def stop(self) -> None:
        self.stopping.set()

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
            if self.socket_file is not None:
                self.socket_file.remove()  # while the listener still holds its inode
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
            # The line is usually there already: read it before asking the selector, so a
            # prompt client costs no epoll registration (and no extra round).
            if not self._read(p, sel, pending, pool, registered=False):
                pending[conn.fileno()] = p
                sel.register(conn, selectors.EVENT_READ, p)

    def _read(
        self,
        p: _Pending,
        sel: selectors.BaseSelector,
        pending: dict[int, _Pending],
        pool: ThreadPoolExecutor,
        *,
        registered: bool = True,
    ) -> bool:
        """Read what ``p``'s client sent; True once the connection has left the accept loop
        (its request dispatched or refused), False while its line is incomplete."""
        try:
            chunk = p.conn.recv(MAX_REQUEST + 1 - len(p.buf))
        except (BlockingIOError, InterruptedError):
            return False
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
            return False
        if registered:
            sel.unregister(p.conn)
            del pending[p.conn.fileno()]
        if error is not None:
            self._refuse(p.conn, error)
            return True
        line = bytes(p.buf[:end])
        with self._count_lock:
            self._inflight += 1
        if self._inline(line):
            self._handle(p.conn, line, pool)  # a small object: no hand-over to a worker
        else:
            self.handed_to_workers += 1
            pool.submit(self._handle, p.conn, line)
        return True

    def _inline(self, line: bytes) -> bool:
        """Whether to serve this request in the accept loop: no witness (its check reads a
        file and the database) and the name last resolved to a small object, so that the load
        cannot hold up the loop for long. Only a scheduling hint: the load is verified in full
        wherever it runs."""
        if self.wpath is not None:
            return False
        size = self._sizes.get(line)
        return size is not None and size <= INLINE_MAX

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

    def _handle(
        self, conn: socket.socket, line: bytes, pool: ThreadPoolExecutor | None = None
    ) -> None:
        """Serve one request: in a worker, or (``pool`` given) in the accept loop, which
        hands the request to ``pool`` after all if its record turns out to be large."""
        deferred = False
        try:
            deferred = self._serve_one(conn, line, pool)
        except Exception as e:  # noqa: BLE001  # last line of defence: replied and logged
            self._internal_error(conn, e)
        finally:
            if not deferred:
                self._done(conn)

    def _internal_error(self, conn: socket.socket, e: BaseException) -> None:
        self.config.log(f"appliance serve: internal error: {e!r}\n{traceback.format_exc()}")
        err = InternalError(f"internal error ({e!r})")
        self._reply(conn, error_reply(err, ExitCode.OPERATIONAL))

    def _done(self, conn: socket.socket) -> None:
        conn.close()
        with self._count_lock:
            self._inflight -= 1

    def _reply(self, conn: socket.socket, data: bytes, fd: int | None = None) -> bool:
        """Send ``data`` (with ``fd``), waiting at most ``send_timeout`` for a slow reader."""
        try:
            conn.settimeout(self.config.send_timeout)
            if fd is None:
                conn.sendall(data)
            else:
                sent = socket.send_fds(conn, [data], [fd])
                if sent < len(data):  # the descriptor went with the first byte
                    conn.sendall(data[sent:])
            return True
        except OSError:
            return False

    def _serve_one(
        self, conn: socket.socket, line: bytes, pool: ThreadPoolExecutor | None = None
    ) -> bool:
        """Serve one request; True when the reply is left to the journal thread, which sends
        it (and closes ``conn``) once the load event is committed, or to a worker."""
        if self.stopping.is_set():
            self._reply(conn, error_reply(ServiceStoppingError("the service is stopping"), 3))
            return False
        who = peer_identity(conn)
        try:
            req = self._parse(line)
        except ApplianceError as e:
            self.refused += 1
            self._reply(conn, error_reply(e, exit_code_for(e)))
            return False
        try:
            outcome = self._load(who, req.name, req.version, req.digest, small=pool is not None)
        except _TooLarge:  # nothing read, hashed or recorded yet: a worker does it all
            self._sizes.pop(line, None)
            self.handed_to_workers += 1
            if pool is None:  # not reached: only the accept loop asks for a small load
                raise
            pool.submit(self._handle, conn, line)
            return True
        if isinstance(outcome, ApplianceError):
            self._sizes.pop(line, None)  # a refusal waits for its event: not in the loop
            self.refused += 1
            self._reply(conn, error_reply(outcome, exit_code_for(outcome)))
            return False
        art, fut = outcome
        if len(self._sizes) >= 4096:
            self._sizes.clear()
        self._sizes[line] = art.size
        fut.add_done_callback(lambda f: self._deliver(conn, art, req, who, f))
        return True

    def _parse(self, line: bytes) -> LoadRequest:
        """``parse_request``, remembered per request line (a pure function of its bytes;
        a line that is refused is not remembered)."""
        req = self._parsed.get(line)
        if req is None:
            req = parse_request(line)
            if len(self._parsed) >= 4096:
                self._parsed.clear()
            self._parsed[line] = req
        return req

    def _deliver(
        self,
        conn: socket.socket,
        art: LoadedArtifact,
        req: LoadRequest,
        who: Identity,
        fut: Future[int],
    ) -> None:
        """In the journal thread, right after the group commit: the reply with the
        descriptor, only if the load's event is committed. A reader too slow to take the
        reply at once is left to a thread of its own, so the journal never waits on a
        client."""
        handed_off = False
        try:
            error = fut.exception()
            if isinstance(error, (Unwitnessed, ApplianceError)):
                # Not committed (disk full, database busy), or committed but not witnessed
                # (lock_held, witness_unreadable): nothing is handed over, the loader is
                # told why with the error's own code, and a committed load's undelivery
                # goes on record (its own event, which does not try the witness again).
                cause = error.cause if isinstance(error, Unwitnessed) else error
                self.config.log(f"appliance serve: load of {req.name} not served: {error}")
                self._reply(conn, error_reply(cause, exit_code_for(cause)))
                if isinstance(error, Unwitnessed):
                    self._undelivered(req, art, who, cause.code)
                return
            if error is not None:  # the event is not on record: nothing is handed over
                self._internal_error(conn, error)
                return
            reply = ok_reply(art.to_dict(), art.record.to_dict(), fut.result())
            os.lseek(art.fd, 0, os.SEEK_SET)  # the loader reads from the start
            try:
                sent = socket.send_fds(conn, [reply], [art.fd], socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                sent = -1  # nothing sent: the descriptor too is still to go
            except OSError:
                self._undelivered(req, art, who)
                return
            if sent == len(reply):
                self.served += 1
                return
            slow = threading.Thread(
                target=self._deliver_slowly,
                args=(conn, art, req, who, reply, sent),
                name="slow-reply",
                daemon=True,
            )
            self.journal.hold()  # released by that thread, after its last submit
            try:
                slow.start()
            except BaseException:
                self.journal.release()
                raise
            handed_off = True
        except Exception as e:  # noqa: BLE001  # last line of defence: replied and logged
            self._internal_error(conn, e)
        finally:
            if not handed_off:
                art.close()
                self._done(conn)

    def _deliver_slowly(
        self,
        conn: socket.socket,
        art: LoadedArtifact,
        req: LoadRequest,
        who: Identity,
        reply: bytes,
        sent: int,
    ) -> None:
        try:
            if sent < 0:
                ok = self._reply(conn, reply, art.fd)
            else:  # the descriptor went with the bytes already sent
                ok = self._reply(conn, reply[sent:])
            if ok:
                self.served += 1
            else:
                self._undelivered(req, art, who)
        except Exception as e:  # noqa: BLE001  # last line of defence: replied and logged
            self._internal_error(conn, e)
        finally:
            art.close()
            self._done(conn)
            self.journal.release()

    def _undelivered(
        self, req: LoadRequest, art: LoadedArtifact, who: Identity, code: str = "client_gone"
    ) -> None:
        """The load is on record as verified; say that it never reached the loader (the
        peer was gone: ``client_gone``; or the witness write failed: its error code, and
        this event does not try the witness again)."""
        fields = undelivered_event(req.name, req.version, art.record, who, code)
        self.journal.submit("load_undelivered", fields, refresh=code == "client_gone")

    def _load(
        self,
        who: Identity,
        name: str,
        version: str | None,
        digest: str | None,
        *,
        small: bool = False,
    ) -> tuple[LoadedArtifact, Future[int]] | ApplianceError:
        """The verified artifact and its load event, queued for the group commit (its
        ``Future`` gives the committed event's ``seq``), or the refusal. ``small``: raise
        ``_TooLarge`` before opening a record above ``INLINE_MAX``."""
        found: list[Record] = []

        def gate(rec: Record) -> None:  # today's grants, re-read when the evidence changed
            if small and rec.size > INLINE_MAX:
                raise _TooLarge
            with self.lock:
                trust = self.cache.trust()
            authorize(trust, who, rec)

        try:
            with sqlite_errors():  # a database that no longer reads is store_corrupt
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
            self._refusal_event(name, version, found, e, who)
            return e
        except ApplianceError as e:  # usage (not_found) and operational: not events, as direct
            return e
        try:
            fut = self.journal.submit("load", load_event(name, version, art.record, art, None, who))
        except BaseException:
            art.close()
            raise
        return art, fut

    def _refusal_event(
        self,
        name: str,
        version: str | None,
        found: list[Record],
        error: ApplianceError,
        who: Identity,
    ) -> None:
        """Record a refusal (a rejection or a suspect state) as a load event. One the
        database cannot take (it is what does not read) is logged instead: the loader
        still gets the refusal, never an internal error."""
        fields = load_event(name, version, found[0] if found else None, None, error, who)
        try:
            self.journal.record("load", fields, refresh=not isinstance(error, StateSuspectError))
        except Unwitnessed as e:  # recorded; only the witness is behind
            self.config.log(f"appliance serve: refusal of {name} recorded, not witnessed: {e}")
        except (ApplianceError, sqlite3.Error) as e:
            why = e.message if isinstance(e, ApplianceError) else str(e)
            self.config.log(
                f"appliance serve: refusal of {name} ({error.code}) not recorded in the "
                f"audit log: {why}"
            )


@dataclass(frozen=True)
class Served:
    """How a service ended: its exit code (0, or 3 if the background failed), where it
    listened, and its counts."""

    code: int
    where: str
    served: int
    refused: int


def serve(config: Config, socket_path: Path | None) -> Served:
    """Listen (activated sockets, else ``socket_path``, else ``default_socket()``) and
    serve until SIGTERM or SIGINT; the socket file it made is removed on the way out if
    it is still its own (``SocketFile``)."""
    # SIGTERM and SIGINT stop the service from before its socket exists: whoever sees the
    # socket may signal at once, while the server is still opening its databases (the
    # default action would end the process without removing the socket file).
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    listeners = activated_sockets()
    made: SocketFile | None = None
    if not listeners:
        path = socket_path or default_socket()
        listeners = [bind_socket(path)]
        made = SocketFile.of(path)
    try:
        server = Server(config, listeners, made, stopping)
    except BaseException:
        close_listeners(listeners, made)
        raise
    where = str(made.path) if made else f"{len(listeners)} activated socket(s)"
    config.log(f"appliance serve: listening on {where} (home {config.home.root})")
    code = server.serve()
    config.log(f"appliance serve: stopped ({server.served} served, {server.refused} refused)")
    return Served(code, where, server.served, server.refused)
