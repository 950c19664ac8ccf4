"""What every command gets: the home, output mode, and how to talk to the user."""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from appliance.errors import OperationalError
from appliance.launch import stdout_message


def path_arg(text: str) -> Path:
    """The type of every path option and argument: an empty one is refused, a usage
    error (``Path("")`` is the current folder, so ``--home "$UNSET"`` in a script would
    make it the home, ``--out ""`` would write keys there)."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path")
    return Path(text)


def flush_std_streams() -> None:
    """Flush stdout and stderr, each one that is open (None: the process was started with
    it closed), before the process ends or is replaced."""
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()


def add_media_option(parser: Any, dest: str = "media_dirs", what: str = "") -> None:
    """``--media DIR`` (repeatable), the same for ``media``, ``import --new`` and ``tui``."""
    parser.add_argument(
        "--media",
        dest=dest,
        type=path_arg,
        action="append",
        default=[],
        metavar="DIR",
        help=f"{what}a folder that counts as removable media (repeatable)",
    )


_COLOURS = {"green": "32", "red": "31", "yellow": "33", "bold": "1"}


def colour_wanted(stream: TextIO) -> bool:
    """Colour only on a terminal, never under ``NO_COLOR`` (any value) or ``TERM=dumb``."""
    if "NO_COLOR" in os.environ or os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


@dataclass
class Context:
    """Per-invocation settings; commands return a dict of JSON fields."""

    home: Path
    json: bool = False
    witness: Path | None = None
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    extra: dict[str, Any] = field(default_factory=dict)  # fields kept in a failure's JSON
    quiet: bool = False  # no human text on stdout (errors still go to stderr)
    # Set by SIGINT, SIGTERM or SIGHUP. A command that sets ``cancellable`` polls
    # ``cancel`` and stops cleanly; otherwise the signal raises KeyboardInterrupt.
    cancel: threading.Event = field(default_factory=threading.Event)
    cancellable: bool = False
    interrupted_by: str | None = None

    def say(self, text: str) -> None:
        """Human text: stdout normally, stderr under ``--json`` (stdout is for JSON)."""
        if self.quiet:
            return
        if self.json:
            self.warn(text)
        else:
            self.write_out(text + "\n")

    def write_out(self, text: str, *, flush: bool = False) -> None:
        """``text`` on stdout. A stdout that cannot take it (closed, or a full disk behind
        ``>``) is ``OperationalError``, exit 3, not a bug; a reader that stopped early
        (``BrokenPipeError``) is left to ``cli.main.main``, which ends quietly."""
        if self.stdout is None:  # the process was started with stdout closed
            raise OperationalError(stdout_message("it is closed"))
        try:
            self.stdout.write(text)
            if flush:
                self.stdout.flush()
        except BrokenPipeError:
            raise
        except OSError as e:
            raise OperationalError(stdout_message(e.strerror or str(e))) from e

    def warn(self, text: str) -> None:
        """Human text on stderr; none when stderr is closed (``print`` would then write it
        to stdout, into the JSON)."""
        if self.stderr is not None:
            print(text, file=self.stderr)

    def paint(self, text: str, colour: str, stream: TextIO | None = None) -> str:
        """``text`` in ``colour`` when the stream it goes to wants colour, else as is."""
        target = stream or (self.stderr if self.json else self.stdout)
        if not colour_wanted(target):
            return text
        return f"\033[{_COLOURS[colour]}m{text}\033[0m"

    def emit_json(self, obj: dict[str, Any]) -> None:
        text = json.dumps(obj, sort_keys=True, ensure_ascii=False)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a name's undecodable bytes: show them, stay UTF-8
            text = json.dumps(utf8_clean(obj), sort_keys=True, ensure_ascii=False)
        self.write_out(text + "\n", flush=True)


def utf8_text(text: str) -> str:
    """``text`` with the undecodable bytes of a file name (surrogate escapes) as ``\\xNN``."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that stands for no byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def utf8_clean(obj: Any) -> Any:
    """``obj`` (JSON data) with every string made encodable as UTF-8 (``utf8_text``)."""
    if isinstance(obj, str):
        return utf8_text(obj)
    if isinstance(obj, dict):
        return {utf8_text(str(k)): utf8_clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [utf8_clean(v) for v in obj]
    return obj


@contextmanager
def no_cycle_collection() -> Iterator[None]:
    """The cyclic garbage collector paused, for a CLI command that builds many objects
    none of which is in a cycle: ``verify``'s pass over N records (rows, records, the
    parsed manifest, statuses: each collection the allocations trigger walks all of
    those still alive, about a fifth of its time at 20,000 records) and a ``load`` or
    ``exec``'s parse of its bundle's stored manifest (100,000 entries at most).
    Reference counting frees them as before; the collector runs again afterwards, as it
    was. Only the CLI's own process: the library and the service never pause it."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
