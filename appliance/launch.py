"""The program's first steps, before argparse and the rest of the CLI are imported.

``entry`` (the console script, ``python -m appliance``, the frozen binary) keeps NumPy
out, and starts hashing early (``appliance.headstart.start_early``) for a ``load`` or
``exec`` on this host (no loader service: the object the command most likely names), a
``verify`` of one record (its object) and a ``verify`` of the whole store (its first
large object): the CLI's own imports,
about 15 ms before the command runs, then overlap the hash of a big model instead of
preceding it. The home and the reference are read off the command line here by a plain
scan (``guess_early``), only a guess: the command takes those head starts only when the
parsed command line names the same home and reference
(``appliance.headstart.take_early``), and takes a hash only for the very inode it opened
and checked itself. A wrong guess costs a hash stopped between chunks, never a decision.

``appliance --version`` is answered here too (``answer_version``), before the CLI is
imported: scripts probe for the tool with it, and it costs no more than the interpreter.

Nothing here imports more than ``os`` and ``sys`` until the guess is made.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing is not imported for ``--version`` (mypy reads the name)
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

VALUED_GLOBALS = ("--home", "--witness", "--anchor")
# ``load``, ``exec`` and ``verify`` options that take a value (``appliance.cli.cmd_load``).
_VALUED = frozenset({*VALUED_GLOBALS, "-o", "--output", "--socket", "--digest", "--refusal-status"})
_EARLY = frozenset({"load", "exec", "verify"})


def split_dashdash(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """The arguments before the first ``--`` and the ones after it."""
    argv = list(argv)
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, []


def command_name(argv: Sequence[str]) -> str | None:
    """The command word of ``argv`` (skipping the global options before it), if any."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in VALUED_GLOBALS:
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def guess_early(argv: Sequence[str], environ: Mapping[str, str]) -> tuple[str, str | None] | None:
    """What to hash early for this command line, as argparse most likely reads it: (home,
    NAME[@VERSION]) of a ``load``, an ``exec`` or a ``verify`` of one record, (home, None)
    of a ``verify`` of the whole store (no references); the home is the last ``--home``,
    else the default home. None for any other command, for help, for a ``verify`` of
    several records, and for a load
    through the loader service (``--socket`` or ``$APPLIANCE_SOCKET``), which hashes
    nothing here."""
    words = split_dashdash(argv)[0]
    command = command_name(words)
    if command not in _EARLY or command != "verify" and environ.get("APPLIANCE_SOCKET"):
        return None
    home: str | None = None
    positional: list[str] = []
    i = 0
    while i < len(words):
        arg = words[i]
        option, eq, value = arg.partition("=")
        if arg in ("-h", "--help") or option == "--socket":
            return None
        if option == "--home" and eq:
            home = value
        elif arg in _VALUED:
            if i + 1 < len(words) and arg == "--home":
                home = words[i + 1]
            i += 1
        elif not arg.startswith("-"):
            positional.append(arg)
        i += 1
    if home == "":
        return None
    if command == "verify":
        if len(positional) > 2:
            return None  # several named records: no guess
        ref = positional[1] if len(positional) == 2 else None
    elif len(positional) < 2:
        return None
    else:
        ref = positional[1]
    from appliance.homepath import default_home_path

    return home if home is not None else default_home_path(), ref


STDOUT_FAILED = 3  # ``appliance.errors.ExitCode.OPERATIONAL``, without importing it here


def stdout_message(reason: str) -> str:
    """What an output that cannot be written is called (``reason``: ``it is closed``, or
    the system's error text); ``load`` to stdout, ``Context.write_out`` and the lines
    below all say it so."""
    return f"cannot write to stdout: {reason}"


def stdout_failed(message: str) -> int:
    """The one line for an output that cannot be written (a full disk behind ``>``, a
    closed stdout; ``message`` from ``stdout_message``): ``operational_error``, exit 3,
    written where the JSON could not go."""
    if sys.stderr is not None:
        sys.stderr.write(f"appliance: error [operational_error]: {message}\n")
    return STDOUT_FAILED


def answer_version(argv: Sequence[str]) -> int | None:
    """``--version`` in first position (the CLI contract): print the version, as one JSON
    object when ``--json`` is given before any ``--``, and return exit code 0; None for
    any other command line."""
    if argv[:1] != ["--version"]:
        return None
    from appliance.version import __version__

    if "--json" in split_dashdash(argv)[0]:
        from pathlib import Path

        from appliance.cli.context import Context
        from appliance.errors import OperationalError

        try:
            Context(home=Path(), json=True).emit_json({"ok": True, "version": __version__})
        except BrokenPipeError:
            return STDOUT_FAILED
        except OperationalError as e:  # (``Context.write_out``'s refusal)
            return stdout_failed(e.message)
        return 0
    if sys.stdout is None:
        return stdout_failed(stdout_message("it is closed"))
    try:
        sys.stdout.write(f"appliance {__version__}\n")
        sys.stdout.flush()
    except BrokenPipeError:
        return STDOUT_FAILED  # the reader went away: nothing to say to it
    except OSError as e:
        return stdout_failed(stdout_message(e.strerror or str(e)))
    return 0


def entry() -> int:
    """Answer ``--version``; else start the head start of a load when the command line
    names one, then run the CLI (``appliance.cli.main.entry``)."""
    answered = answer_version(sys.argv[1:])
    if answered is not None:
        return answered
    sys.modules.setdefault("numpy", None)  # type: ignore[arg-type]
    guess = guess_early(sys.argv[1:], os.environ)
    if guess is not None:
        from appliance.headstart import start_early
        from appliance.homepath import DB_FILE

        start_early(guess[0], DB_FILE, guess[1])
    from appliance.cli.main import entry as run_cli

    return run_cli()
