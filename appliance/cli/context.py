"""What every command gets: the home, output mode, and how to talk to the user."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO


@dataclass
class Context:
    """Per-invocation settings; commands return a dict of JSON fields."""

    home: Path
    json: bool = False
    witness: Path | None = None
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    extra: dict[str, Any] = field(default_factory=dict)  # fields kept in a failure's JSON

    def say(self, text: str) -> None:
        """Human text: stdout normally, stderr under ``--json`` (stdout is for JSON)."""
        stream = self.stderr if self.json else self.stdout
        print(text, file=stream)

    def warn(self, text: str) -> None:
        print(text, file=self.stderr)

    def emit_json(self, obj: dict[str, Any]) -> None:
        self.stdout.write(json.dumps(obj, sort_keys=True, ensure_ascii=False) + "\n")
        self.stdout.flush()
