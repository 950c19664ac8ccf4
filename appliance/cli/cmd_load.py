"""``appliance load NAME[@VERSION] [-o FILE]`` and ``appliance exec NAME[@VERSION] -- CMD ARG ...``.

Both verify first (witness, full re-hash of what is handed over: the immutable
store object itself, or a private sealed copy; today's trust) and record a ``load``
event in the audit log. The hash of an immutable object starts before the rest of
the product is imported (``appliance.headstart``) and runs through a mapping;
nothing is written or run before every check passed (docs/LOADING.md).

``load`` writes the verified bytes to FILE (a temporary file beside it, then
renamed into place) or to stdout. With ``--json``, ``-o FILE`` is required
(stdout carries the JSON) and the object holds: ``name``, ``version``,
``digest`` (``{blake3}``), ``size``, ``copy`` (``sealed_memfd`` or
``unnamed_file``: what was hashed and handed over), ``output`` (FILE or null).

``exec`` runs CMD with the verified descriptor inherited: ``{}`` in its
arguments becomes ``/dev/fd/N`` and ``APPLIANCE_FD=N`` is set. It then
replaces itself with CMD (the exit status is CMD's, and nothing is printed on
success). When it refuses, CMD never runs; exit 1, 3 or 4 (2 for an unknown
name). A tampered object: exit 4 ``object_tampered``. ``--refusal-status N``
makes every refusal of ``exec`` itself exit N instead (like ``env``/``timeout``
reserving 125), so a script can tell it from CMD's own status.

Both take ``--socket PATH`` (or ``APPLIANCE_SOCKET``): ask the loader service
(``appliance serve``) instead of reading the home, with the same output and
exit codes; and ``--digest HEX``: refuse any object but that BLAKE3 digest
(``digest_pinned``, exit 1).

``load`` without ``-o`` refuses to write to a terminal (``stdout_is_terminal``,
exit 2). When the reader of stdout goes away early (``load X | head -c 10``)
it stops quietly with exit 0: the load was verified and recorded, and the
reader's own status tells whether it failed.
"""

from __future__ import annotations

import argparse
import mmap
import os
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.cli.context import Context, flush_std_streams, no_cycle_collection, path_arg
from appliance.errors import ExecFailedError, IOFailedError, StdoutIsTerminalError
from appliance.headstart import HeadStart, head_start, take_early
from appliance.home import DB_FILE, Home
from appliance.launch import stdout_message
from bundles.errors import ApplianceError, OperationalError, UsageError

if TYPE_CHECKING:
    from appliance.loader import LoadedArtifact

# The loader (and with it sqlite-utils, cryptography, the trust and audit code: about
# 100 ms of CPU) is imported only once ``head_start`` has the object hashing.


def register(subs: Any, common: argparse.ArgumentParser) -> None:
    p = subs.add_parser("load", parents=[common], help="verify and write out an artifact's bytes")
    p.add_argument("ref", metavar="NAME[@VERSION]", help="artifact (default: the active version)")
    p.add_argument(
        "-o", "--output", type=path_arg, help="write the verified bytes here (else stdout)"
    )
    _service_options(p)
    p.set_defaults(func=run_load)
    e = subs.add_parser(
        "exec",
        parents=[common],
        help="verify, then run a command on the verified descriptor",
        usage="appliance exec [options] NAME[@VERSION] -- CMD [ARG ...]",
        epilog="Everything after -- is the command. An argument {} becomes /dev/fd/N, the "
        "verified descriptor (also in $APPLIANCE_FD). Example: appliance exec model@2.0 -- "
        "python serve.py --weights {}. See docs/CLI.md for exit codes.",
    )
    e.add_argument("ref", metavar="NAME[@VERSION]", help="artifact (default: the active version)")
    _service_options(e)
    e.add_argument(
        "--refusal-status",
        type=int,
        metavar="N",
        help="exit N (1-255) when exec itself refuses, whatever the reason",
    )
    e.set_defaults(func=run_exec, takes_rest=True)


def _service_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--socket",
        type=path_arg,
        metavar="PATH",
        help="load through the loader service at PATH (default: $APPLIANCE_SOCKET; off if unset)",
    )
    p.add_argument("--digest", metavar="HEX", help="refuse any object but this BLAKE3 digest")


def _digest(value: str | None) -> str | None:
    if value is None:
        return None
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value.lower()):
        raise UsageError(f"--digest {value!r}: a BLAKE3 digest is 64 hex characters")
    return value.lower()


def _load(ctx: Context, args: argparse.Namespace) -> LoadedArtifact:
    sock = args.socket
    if sock is None and os.environ.get("APPLIANCE_SOCKET"):
        sock = Path(os.environ["APPLIANCE_SOCKET"])
    home = Home(ctx.home)
    # The hash of the object this most likely is started before the command line was
    # parsed (``appliance.launch``), else it starts now, in a thread, and the product is
    # imported meanwhile; the loader takes it only for the very inode it checks itself.
    early = take_early(home.root, args.ref)
    if sock is not None and early is not None:
        early.close()
        early = None
    elif sock is None and early is None:
        early = head_start(home.root, DB_FILE, args.ref)
    try:
        with no_cycle_collection():
            return _load_verified(ctx, args, home, sock, early)
    finally:
        if early is not None:
            early.close()


def _load_verified(
    ctx: Context,
    args: argparse.Namespace,
    home: Home,
    sock: Path | None,
    early: HeadStart | None,
) -> LoadedArtifact:
    from appliance.loader import load_from_home
    from appliance.store import parse_ref

    name, version = parse_ref(args.ref)
    if not name:
        raise UsageError("give an artifact name: NAME[@VERSION]")
    digest = _digest(args.digest)
    if sock is not None:
        from appliance.service.client import request_load

        return request_load(sock, name, version, digest=digest)
    return load_from_home(
        home, name, version, witness_path=ctx.witness, digest=digest, mapped=True, early=early
    )


# Copies whose file cannot shrink, so a mapping of them never raises SIGBUS.
_UNSHRINKABLE = ("immutable_inode", "sealed_memfd")
_MAX_WRITE = 0x7FFFF000  # Linux moves at most this much in one write(2)


def _write_out(art: LoadedArtifact, dst: int) -> None:
    """The verified bytes of ``art`` to ``dst``: by ``write`` from a read-only mapping of
    the verified descriptor when ``dst`` is a character device (``-o /dev/null``: the
    kernel takes a write without reading a page, where ``sendfile`` walks the page
    cache; another device reads the pages from the mapping) and the copy cannot shrink;
    else by ``sendfile`` (``_copy_out``). Either way the bytes are those of the
    descriptor that was hashed, and none is written before the load was verified."""
    if art.size and art.to_dict()["copy"] in _UNSHRINKABLE and stat.S_ISCHR(os.fstat(dst).st_mode):
        try:
            mapping = mmap.mmap(art.fd, art.size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
        except OSError:
            mapping = None  # a kernel or descriptor that will not map it: sendfile
        if mapping is not None:
            with mapping, memoryview(mapping) as view:
                offset = 0
                while offset < art.size:
                    n = os.write(dst, view[offset : offset + _MAX_WRITE])
                    if n == 0:
                        raise IOFailedError("the output took no more bytes")
                    offset += n
            return
    _copy_out(art.fd, dst, art.size)


def _copy_out(src: int, dst: int, size: int) -> None:
    offset = 0
    while offset < size:
        try:
            n = os.sendfile(dst, src, offset, min(size - offset, 1 << 30))
        except OSError:
            chunk = os.pread(src, min(size - offset, 1 << 20), offset)
            n = len(chunk)
            view = memoryview(chunk)
            while view:
                view = view[os.write(dst, view) :]
        if n == 0:
            raise IOFailedError("the verified copy ended early")
        offset += n


def _write_file(art: LoadedArtifact, out: Path) -> None:
    """A regular file is replaced atomically (temp file beside it, then rename); anything
    else that exists (``/dev/null``, a FIFO, a terminal) is written in place, never replaced.
    """
    try:
        st = os.stat(out)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise IOFailedError(f"cannot write {out}: {e.strerror}") from e
    if st is not None and not stat.S_ISREG(st.st_mode):
        if stat.S_ISDIR(st.st_mode):
            raise UsageError(f"-o {out} is a directory")
        try:
            fd = os.open(out, os.O_WRONLY | os.O_CLOEXEC)
            try:
                _write_out(art, fd)
            finally:
                os.close(fd)
        except OSError as e:
            raise IOFailedError(f"cannot write {out}: {e.strerror}") from e
        return
    import secrets

    tmp = out.with_name(f".{out.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise IOFailedError(f"cannot write {out}: {e.strerror}") from e
    try:
        try:
            _copy_out(art.fd, fd, art.size)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, out)
    except OSError as e:
        raise IOFailedError(f"cannot write {out}: {e.strerror}") from e
    finally:
        if tmp.exists():
            tmp.unlink()


def run_load(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    if ctx.json and args.output is None:
        raise UsageError("with --json, give -o FILE (stdout carries the JSON)")
    if args.output is None and sys.stdout is None:  # started with stdout closed
        raise OperationalError(stdout_message("it is closed"))
    if args.output is None and os.isatty(sys.stdout.fileno()):
        raise StdoutIsTerminalError(
            "refusing to write artifact bytes to a terminal: give -o FILE or redirect stdout"
        )
    onto_stdout = args.output is not None and _is_stdout(args.output)
    if ctx.json and onto_stdout:
        raise UsageError(f"with --json, -o {args.output} is stdout, which carries the JSON")
    with _load(ctx, args) as art:
        if args.output is not None:
            _write_file(art, args.output)
            (ctx.warn if onto_stdout else ctx.say)(  # never into the artifact's bytes
                f"verified {art.name}@{art.version} ({art.size:,} B, BLAKE3 "
                f"{art.digest[:16]}) -> {args.output}"
            )
        else:
            sys.stdout.flush()
            try:
                _write_out(art, sys.stdout.fileno())
            except BrokenPipeError:
                # The reader stopped early (``| head -c 10``): quiet, exit 0 (see above).
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                os.close(devnull)
                return {**art.to_dict(), "output": None}
            except OSError as e:
                raise OperationalError(stdout_message(e.strerror or str(e))) from e
            ctx.warn(f"verified {art.name}@{art.version} ({art.size:,} B)")
        return {**art.to_dict(), "output": str(args.output) if args.output else None}


def _is_stdout(path: Path) -> bool:
    """``path`` names the very file that is stdout (``-o /dev/stdout``, ``-o /proc/self/fd/1``,
    a file stdout is redirected to): the status line then goes to stderr."""
    try:
        st, out = os.stat(path), os.fstat(sys.stdout.fileno())
    except (OSError, ValueError):
        return False
    return (st.st_dev, st.st_ino) == (out.st_dev, out.st_ino)


def run_exec(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    status = args.refusal_status
    if status is not None and not 1 <= status <= 255:
        raise UsageError("--refusal-status must be between 1 and 255")
    try:
        return _exec(args, ctx)
    except ApplianceError as e:
        if status is not None:
            e.exit_status = status  # type: ignore[attr-defined]  # read by cli.main
        raise


def _exec(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    command: list[str] = list(args.rest)
    if not command:
        raise UsageError("give the command after --: appliance exec NAME -- CMD ARG ...")
    art = _load(ctx, args)
    os.set_inheritable(art.fd, True)
    os.lseek(art.fd, 0, os.SEEK_SET)  # a command reading APPLIANCE_FD reads from the start
    argv = [art.path if a == "{}" else a.replace("{}", art.path) for a in command]
    env = {**os.environ, "APPLIANCE_FD": str(art.fd)}
    flush_std_streams()
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as e:
        art.close()
        raise ExecFailedError(f"cannot run {argv[0]!r}: {e.strerror}") from e
    raise AssertionError("unreachable")  # pragma: no cover
