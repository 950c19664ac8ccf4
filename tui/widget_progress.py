"""A progress bar that draws with ASCII in the ASCII mode (``tui.fmt.choose``).

Textual's bar draws "━", "╸" and "╺", which the Linux console font lacks; in the
ASCII mode the done part is ``#`` and the rest ``-`` (each in the bar's colours).
"""

from __future__ import annotations

from rich.console import Console, ConsoleOptions, RenderResult
from rich.text import Text
from textual.renderables.bar import Bar as BarRenderable
from textual.widgets import ProgressBar

from tui import fmt

DONE = "#"
LEFT = "-"


class AsciiBarRenderable(BarRenderable):
    """The bar with ``#`` for the highlighted range and ``-`` around it, whole cells only."""

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = self.width or options.max_width
        lo, hi = self.highlight_range
        start = max(0, min(width, round(lo)))
        end = max(start, min(width, round(hi)))
        background = console.get_style(self.background_style)
        highlight = console.get_style(self.highlight_style)
        yield Text.assemble(
            (LEFT * start, background),
            (DONE * (end - start), highlight),
            (LEFT * (width - end), background),
            end="",
        )


class AsciiProgressBar(ProgressBar):
    """``ProgressBar`` drawn with ``AsciiBarRenderable``."""

    BAR_RENDERABLE = AsciiBarRenderable


def progress_bar(total: float, *, id: str) -> ProgressBar:
    """A progress bar (no time estimate) in the glyphs chosen at start-up."""
    cls = AsciiProgressBar if fmt.glyphs().ascii else ProgressBar
    return cls(total=total, show_eta=False, id=id)
