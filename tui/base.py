"""What every screen shares: the typed app, a Back binding, plain-text table cells."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from rich.text import Text
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Header

from bundles.media import printable
from tui import fmt

if TYPE_CHECKING:
    from tui.app import ApplianceApp


def cell(text: str) -> Text:
    """A table cell that shows ``text`` escaped: names on media are never markup, and
    their control characters and escape sequences are shown as ``\\x1b``, never sent."""
    ascii_ = fmt.glyphs().ascii  # rich's ellipsis is "…": crop in the ASCII mode
    return Text(printable(text, 400), no_wrap=True, overflow="crop" if ascii_ else "ellipsis")


def header() -> Header:
    """The header, with an ASCII icon in the ASCII mode."""
    return Header(icon=fmt.glyphs().icon)


def footer() -> Footer:
    """The footer; the ASCII mode hides the palette hint (drawn after a "▏" separator)."""
    return Footer(show_command_palette=not fmt.glyphs().ascii)


class ApplianceScreen(Screen[None]):
    """Base screen; subclasses that show data implement ``refresh_data``."""

    @property
    def app_(self) -> ApplianceApp:
        return cast("ApplianceApp", self.app)

    def refresh_data(self) -> None:
        """Reload what the screen shows (called on resume and on a theme change)."""


class SubScreen(ApplianceScreen):
    """A screen over Home: Escape goes back."""

    BINDINGS = [Binding("escape", "back", "Back", id="back")]

    def action_back(self) -> None:
        self.app.pop_screen()
