"""``appliance`` command line: parsing, dispatch, error to exit code, ``--json``.

Each command group lives in its own ``cmd_*`` module with a ``register``
function. A command function takes ``(args, ctx)`` and returns a dict of JSON
fields; it raises an ``ApplianceError`` to refuse. Nothing here imports
textual: the TUI is imported only by the ``tui`` command.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

from appliance.cli.context import Context, flush_std_streams, path_arg
from appliance.errors import (
    ApplianceError,
    CancelledError,
    ExitCode,
    InternalError,
    InterruptedOperationError,
    OperationalError,
    UsageError,
    exit_code_for,
)
from appliance.launch import (
    answer_version,
    command_name,
    split_dashdash,
    stdout_failed,
    stdout_message,
)

Command = Callable[[argparse.Namespace, Context], dict[str, Any]]


# Command name -> the ``cmd_*`` module that registers it (one module may own several).
GROUPS: dict[str, str] = {
    "key": "cmd_keys",
    "bundle": "cmd_bundle",
    "init": "cmd_init",
    "trust": "cmd_trust",
    "import": "cmd_import",
    "media": "cmd_media",
    "list": "cmd_store",
    "verify": "cmd_store",
    "load": "cmd_load",
    "exec": "cmd_load",
    "rollback": "cmd_rollback",
    "history": "cmd_history",
    "audit": "cmd_audit",
    "witness": "cmd_audit",
    "demo": "cmd_demo",
    "tui": "cmd_tui",
    "serve": "cmd_serve",
    "watch": "cmd_watch",
    "alarms": "cmd_watch",
    "completion": "cmd_completion",
}
# Commands that handle signals themselves (the TUI's event loop; long-running services).
_OWN_SIGNALS = {"tui", "serve", "watch"}
_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# One-shot commands that leave nothing behind for the interpreter's teardown (``entry``).
_FAST_EXIT = frozenset({"load", "exec", "verify"})


def command_groups(command: str | None = None) -> tuple[ModuleType, ...]:
    """The ``cmd_*`` modules to register: only the one owning ``command`` when known.

    Importing a command module pulls in what it needs (sqlite3,
    cryptography, ...), so ``--version`` imports none and a command imports only
    its own (start-up time, docs/PERFORMANCE.md). Help and unknown commands get them all,
    in the order ``GROUPS`` lists them. PyInstaller's spec collects every
    submodule of ``appliance``, so these dynamic imports are in the binary.
    """
    names = [GROUPS[command]] if command in GROUPS else list(dict.fromkeys(GROUPS.values()))
    return tuple(importlib.import_module(f"appliance.cli.{name}") for name in names)


class _HelpRequested(Exception):
    """``--help`` was asked for; carries the text so ``--json`` can wrap it."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class _ParseError(Exception):
    """argparse refused the arguments; carries the usage line of the (sub)command."""

    def __init__(self, message: str, usage: str) -> None:
        super().__init__(message)
        self.message = message
        self.usage = usage


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so usage errors and help get our format."""

    def error(self, message: str) -> NoReturn:
        raise _ParseError(f"{message} (see '{self.prog} --help')", self.format_usage())

    def print_help(self, file: Any = None) -> None:
        raise _HelpRequested(self.format_help())


def _globals(parser: argparse.ArgumentParser, *, top: bool) -> None:
    default = None if top else argparse.SUPPRESS
    parser.add_argument(
        "--home",
        type=path_arg,
        default=default,
        help="appliance home (default: $APPLIANCE_HOME or a per-user folder)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="print exactly one JSON object on stdout",
    )
    parser.add_argument(
        "--witness",
        type=path_arg,
        default=default,
        help="state witness file (default: the one the trust anchor names, else "
        "$APPLIANCE_WITNESS; off if unset)",
    )
    parser.add_argument(
        "--anchor",
        type=path_arg,
        default=default,
        help="the home's trust anchor file (default: $APPLIANCE_ANCHOR, else its place "
        "under /etc/appliance/anchors; see docs/SECURITY.md)",
    )
    parser.add_argument(
        "--read-only",
        dest="read_only",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="write nothing at all: no audit events, no witness (examine a copied home)",
    )


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser for every command, or only for ``command``'s group when given."""
    common = _Parser(add_help=False)
    _globals(common, top=False)
    parser = _Parser(prog="appliance", description="Offline verification appliance")
    _globals(parser, top=True)
    subs = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for group in command_groups(command):
        group.register(subs, common)
    return parser


def _context(args: argparse.Namespace) -> Context:
    from appliance.home import default_home  # kept out of --version

    witness = args.witness
    if witness is None and os.environ.get("APPLIANCE_WITNESS"):
        witness = Path(os.environ["APPLIANCE_WITNESS"])
    # The core reads these two from the environment, so every layer sees one setting.
    if args.anchor is not None:
        os.environ["APPLIANCE_ANCHOR"] = os.path.abspath(args.anchor)
    if args.read_only:
        os.environ["APPLIANCE_READ_ONLY"] = "1"
    return Context(
        home=args.home or default_home(),
        json=bool(args.json),
        witness=witness,
        quiet=bool(getattr(args, "quiet", False)),
    )


def run(argv: Sequence[str]) -> int:
    argv = list(argv)
    wants_json = "--json" in split_dashdash(argv)[0]
    answered = answer_version(argv)  # (the program's entry answers it before this)
    if answered is not None:
        return answered
    ctx = Context(home=Path(), json=wants_json)
    try:
        head, tail = split_dashdash(argv)
        parser = build_parser(command_name(head))
        args = parser.parse_args(head)
        args.rest = tail
        if not getattr(args, "func", None):
            raise _ParseError(
                "a command is required (see 'appliance --help')", parser.format_usage()
            )
        if tail and not getattr(args, "takes_rest", False):
            raise UsageError(f"appliance {args.command}: unexpected arguments after --")
        ctx = _context(args)
        if args.command not in _OWN_SIGNALS:
            _catch_signals(ctx)
        result = args.func(args, ctx)
    except _ParseError as p:
        usage, message = p.usage, p.message
        sub = _subparser(parser, command_name(head))
        if sub is not None and usage == parser.format_usage():  # e.g. an unknown option
            usage = sub.format_usage()
            message = message.replace("'appliance --help'", f"'{sub.prog} --help'")
        if not ctx.json and command_name(head) is None:  # no command: show how to give one
            ctx.warn(usage.removesuffix("\n"))
        return _fail(ctx, UsageError.code, message, ExitCode.USAGE)  # else one line
    except _HelpRequested as h:
        if ctx.json:
            ctx.emit_json({"ok": True, "help": h.text})
        else:
            ctx.write_out(h.text)
        return ExitCode.OK
    except CancelledError as e:
        if ctx.interrupted_by is None:
            return _fail(ctx, e.code, e.message, exit_code_for(e))
        return _interrupted(ctx)
    except ApplianceError as e:
        # ``exec --refusal-status N`` (issue 16) sets ``exit_status`` on its refusals.
        return _fail(ctx, e.code, e.message, getattr(e, "exit_status", None) or exit_code_for(e))
    except KeyboardInterrupt:
        return _interrupted(ctx)
    except Exception as e:  # last line of defence: one line, not a traceback
        sqlite = sys.modules.get("sqlite3")  # (imported only by commands that use it)
        if sqlite is not None and isinstance(e, sqlite.Error):
            # A state database that stops reading mid-command (a page overwritten outside
            # SQLite): store_corrupt, exit 4, as when it does not open; not a bug.
            from appliance.db import translate_sqlite_error

            err = translate_sqlite_error(e)
            return _fail(ctx, err.code, err.message, exit_code_for(err))
        if os.environ.get("APPLIANCE_DEBUG"):
            raise
        return _fail(
            ctx,
            InternalError.code,
            f"internal error ({type(e).__name__}: {e}); this is a bug — rerun with "
            "APPLIANCE_DEBUG=1 for a traceback. Store changes are all-or-nothing.",
            ExitCode(InternalError.exit_code),
        )
    finally:
        _restore_signals()
    if ctx.json:
        ctx.emit_json({"ok": True, **result})
    return ExitCode.OK


def _subparser(parser: argparse.ArgumentParser, name: str | None) -> Any:
    """The parser of command ``name`` (None when unknown)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and name in action.choices:
            return action.choices[name]
    return None


_saved_handlers: dict[int, Any] = {}


def _catch_signals(ctx: Context) -> None:
    """SIGTERM (``timeout``, systemd) and SIGHUP (a closed terminal) count as Ctrl-C.

    A cancellable command (``ctx.cancellable``: an import) gets its ``cancel`` event
    set and stops at its next check, removing its staging files; any other command
    is interrupted at once. Either way the JSON says ``interrupted``, exit 3.
    """
    if threading.current_thread() is not threading.main_thread():
        return  # signals reach only the main thread (``run`` called from a worker)

    def handler(signum: int, frame: Any) -> None:
        ctx.interrupted_by = signal.Signals(signum).name
        ctx.cancel.set()
        if not ctx.cancellable:
            raise KeyboardInterrupt

    for sig in _SIGNALS:
        _saved_handlers[sig] = signal.signal(sig, handler)


def _restore_signals() -> None:
    while _saved_handlers:
        sig, old = _saved_handlers.popitem()
        signal.signal(sig, old)


def _interrupted(ctx: Context) -> int:
    by = ctx.interrupted_by or "SIGINT"
    error = InterruptedOperationError(f"interrupted ({by}); nothing was changed")
    return _fail(ctx, error.code, error.message, exit_code_for(error))


def _fail(ctx: Context, code: str, message: str, exit_code: int) -> int:
    if ctx.json:
        ctx.emit_json(
            {
                **ctx.extra,
                "ok": False,
                "error": {"code": code, "message": message},
                "exit_code": int(exit_code),
            }
        )
    label = ctx.paint("error", "red", ctx.stderr)
    ctx.warn(f"appliance: {label} [{code}]: {message}")
    return int(exit_code)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        code = run(sys.argv[1:] if argv is None else argv)
        if sys.stdout is not None:
            sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return ExitCode.OPERATIONAL
    except OperationalError as e:  # the result (or the refusal) could not be written
        return stdout_failed(e.message)
    except OSError as e:  # what was left in stdout's buffer could not be written
        return stdout_failed(stdout_message(e.strerror or str(e)))
    return code


def entry() -> int:
    """The program's entry (console script, ``python -m appliance``, the frozen binary):
    ``main`` with NumPy kept out: no command uses it, and a library that reaches for
    it whenever it is installed (sqlite-utils did, before the product dropped it) costs
    0.1 to 0.3 s at every start.

    ``load``, ``exec`` (when it refused) and ``verify`` end with ``os._exit`` once stdout
    and stderr are flushed: by then the command has committed or closed what it wrote
    (``verify`` writes nothing; its hashing helpers were waited for), and the
    interpreter's teardown of every imported module cost about 50 ms of a 2 GiB load and
    0.1 to 0.2 s of CPU after a ``verify`` of 20,000 records (bench/scale.py). No atexit
    work is skipped: the product registers none.
    """
    sys.modules.setdefault("numpy", None)  # type: ignore[arg-type]
    code = main()
    if command_name(split_dashdash(sys.argv[1:])[0]) in _FAST_EXIT:
        try:
            flush_std_streams()
        except OSError:
            return code  # the interpreter's own exit reports what could not be written
        os._exit(code)
    return code
