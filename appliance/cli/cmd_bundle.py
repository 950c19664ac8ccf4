"""CLI commands: bundle (not built yet; see the open issues)."""

from __future__ import annotations

import argparse
from typing import Any


def register(subs: Any, common: argparse.ArgumentParser) -> None:
    """No commands registered yet."""
