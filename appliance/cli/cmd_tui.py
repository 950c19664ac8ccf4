"""``appliance tui [--media DIR ...]``: the operator's terminal UI.

Textual is imported inside the command function only, so no other command
pays for it (or needs it). JSON: ``{"tui_exit_code": N}`` after the UI closes.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from typing import Any

from appliance.cli.context import Context, add_media_option
from appliance.home import Home
from bundles.errors import UsageError
from bundles.media import media_error


def register(subs: Any, common: argparse.ArgumentParser) -> None:
    p = subs.add_parser("tui", parents=[common], help="the operator's terminal UI")
    add_media_option(p, "media", "")
    p.set_defaults(func=cmd_tui)


def cmd_tui(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    for folder in args.media:
        try:
            st = os.stat(folder)
        except OSError as e:
            raise media_error(str(folder), e) from e  # absent media: exit 3, as `media`
        if not stat.S_ISDIR(st.st_mode):
            raise UsageError(f"--media {folder}: not a folder")
    if not (_is_terminal(sys.stdin) and _is_terminal(sys.stdout)):
        raise UsageError(
            "appliance tui needs a terminal on stdin and stdout; scripts use the other "
            "commands (media, import, list, audit) with --json"
        )
    Home(ctx.home).require()
    import tui  # lazy: only this command imports textual

    code = tui.run_app(ctx.home, list(args.media), ctx.witness)
    return {"tui_exit_code": code}


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
