"""The ``appliance`` command line (contract: docs/CLI.md)."""

from appliance.cli.main import build_parser, entry, main, run

__all__ = ["build_parser", "entry", "main", "run"]
