"""The ``appliance`` command line (contract: DESIGN section 9)."""

from appliance.cli.main import build_parser, entry, main, run

__all__ = ["build_parser", "entry", "main", "run"]
