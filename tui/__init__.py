"""The operator's terminal UI (Textual): a thin layer over ``appliance``'s public API.

Only this package imports textual; ``appliance`` and ``bundles`` never do, and
the CLI imports ``tui`` inside the ``tui`` command only.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["run_app"]


def run_app(home: Path, media: list[Path], witness: Path | None = None) -> int:
    """Run the TUI on ``home`` with ``media`` folders counted as media; returns the exit code.

    Raises ``NotInitializedError`` (exit 3) when ``home`` is not an appliance home.
    """
    from appliance.home import Home
    from tui.app import ApplianceApp

    Home(Path(home)).require()
    app = ApplianceApp(Path(home), media, witness)
    code = app.run()
    return int(code or 0)
