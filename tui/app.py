"""The operator's application: screens over the appliance's public API."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from rich.text import Text
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.content import Content
from textual.screen import Screen
from textual.scrollbar import ScrollBar, ScrollBarRender
from textual.theme import Theme

from appliance.home import Home
from appliance.mediascan import Medium
from tui import fmt
from tui.model import MediaPoll
from tui.scanner import MediaScanner

ProgressHook = Callable[[str, int, int], None]

STYLE_VARS = ("text-success", "text-error", "text-warning", "text-accent")


class AsciiScrollBarRender(ScrollBarRender):
    """Scrollbars of blanks in a colour: no partial-block glyphs at the thumb's ends."""

    VERTICAL_BARS = [" "] * 8
    HORIZONTAL_BARS = [" "] * 8


class ApplianceApp(App[int]):
    """``appliance tui``: media and bundles, review, verify and import, inventory, audit."""

    TITLE = "appliance"
    CSS_PATH = [Path(__file__).with_name("app.tcss")]  # absolute: subclasses live elsewhere
    ENABLE_COMMAND_PALETTE = True
    BINDINGS = [
        Binding("q", "quit", "Quit", id="app.quit"),
        Binding("question_mark", "help", "Help", id="app.help"),
        Binding("f1", "help", "Help", id="app.help_f1", show=False),
        Binding("f2", "toggle_theme", "Light/Dark", id="app.theme", show=False),
    ]

    def __init__(
        self,
        home: Path,
        media: Iterable[Path] = (),
        witness: Path | None = None,
        *,
        auto_media: bool = True,
        poll_interval: float = 2.0,
        cursor_blink: bool = True,
    ) -> None:
        self.glyphs = fmt.choose()  # once, at start-up: ASCII on the Linux console
        # Textual draws scrollbars with one process-wide renderer; set it for this run.
        ScrollBar.renderer = AsciiScrollBarRender if self.glyphs.ascii else ScrollBarRender
        super().__init__()
        self.set_class(self.glyphs.ascii, "-ascii")  # app.tcss: ASCII borders
        self.home = Home(Path(home))
        self.witness = witness
        self.media_dirs = [Path(p) for p in media]
        self.auto_media = auto_media
        # One poll at a time, in a child process whose caches survive polls: a poll
        # re-reads only what changed, and never parses on this process's GIL.
        self.scanner = MediaScanner(self.home, self.media_dirs, auto_media)
        self.scanner.start()
        self.scans = 0  # media scans run (one at a time: the home screen's exclusive worker)
        self.poll_interval = poll_interval
        self.cursor_blink = cursor_blink
        self.progress_hook: ProgressHook | None = None  # tests: called in the import thread
        self.clock: Callable[[], float] = time.monotonic
        self.media: list[Medium] = []  # the latest scan (Home keeps it current)
        self.running_imports: set[threading.Event] = set()
        self._styles: dict[str, str] = {}

    def on_mount(self) -> None:
        self.theme_changed_signal.subscribe(self, self._theme_changed)

    def on_unmount(self) -> None:
        self.scanner.close()

    def format_title(self, title: str, sub_title: str) -> Content:
        if not sub_title:
            return Content(title)
        return Content.assemble(
            title, (f" {self.glyphs.dash} ", "dim"), Content(sub_title).stylize("dim")
        )

    def get_key_display(self, binding: Binding) -> str:
        shown = super().get_key_display(binding)
        if self.glyphs.ascii and not shown.isascii():  # "⏎", arrows: the key's name instead
            modifiers, key = binding.parse_key()
            return "+".join([*modifiers, key])
        return shown

    # --- screens -----------------------------------------------------------------

    def scan_media(self) -> MediaPoll:
        """One poll of the media and the core's claimed statuses (call from a worker
        thread; it waits for the scanner process)."""
        self.scans += 1
        return self.scanner.poll()

    def get_default_screen(self) -> Screen[None]:
        from tui.screen_home import HomeScreen

        return HomeScreen()

    def back_to_home(self) -> None:
        while len(self.screen_stack) > 1:
            self.pop_screen()

    def show(self, screen: Screen[None]) -> None:
        """Open a top-level screen over Home (whatever was open is closed)."""
        self.back_to_home()
        self.push_screen(screen)

    def action_inventory(self) -> None:
        from tui.screen_inventory import InventoryScreen

        self.show(InventoryScreen())

    def action_audit(self) -> None:
        from tui.screen_audit import AuditScreen

        self.show(AuditScreen())

    def action_keys(self) -> None:
        from tui.screen_keys import KeysScreen

        self.show(KeysScreen())

    def action_home(self) -> None:
        self.back_to_home()

    def action_help(self) -> None:
        """``?`` / ``F1``: the keys of the current screen (again: close the help)."""
        from tui.screen_help import HelpScreen, screen_keys

        if isinstance(self.screen, HelpScreen):
            self.screen.dismiss(None)
            return
        title = "Home" if len(self.screen_stack) == 1 else self.screen.title or self.title
        self.push_screen(HelpScreen(title, screen_keys(self, self.screen)))

    async def action_quit(self) -> None:
        for cancel in list(self.running_imports):
            cancel.set()  # a running import stops at its next chunk; nothing is promoted
        await super().action_quit()

    def action_toggle_theme(self) -> None:
        self.theme = "textual-light" if self.theme == "textual-dark" else "textual-dark"

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        yield SystemCommand("Home", "Media, bundles and the latest audit events", self.action_home)
        yield SystemCommand("Inventory", "Installed artifacts and versions", self.action_inventory)
        yield SystemCommand(
            "Audit log", "Every decision, and the chain's status", self.action_audit
        )
        yield SystemCommand(
            "Keys and roles", "Trust: roles, thresholds, revocations", self.action_keys
        )
        yield SystemCommand(
            "Light / dark", "Switch between the light and dark theme", self.action_toggle_theme
        )
        yield from super().get_system_commands(screen)

    # --- colours for rich Text cells (DataTable) -------------------------------------

    def _theme_changed(self, theme: Theme) -> None:
        self._styles = {}
        for screen in self.screen_stack:
            refresh = getattr(screen, "refresh_data", None)
            if callable(refresh) and screen.is_mounted:
                refresh()

    def tone(self, text: str, tone: str) -> Text:
        """``text`` as a table cell in a theme colour: ok, bad, warn, muted, accent."""
        if not self._styles:
            variables = self.get_css_variables()
            self._styles = {v: variables.get(v, "") for v in STYLE_VARS}
        var = {
            "ok": "text-success",
            "bad": "text-error",
            "warn": "text-warning",
            "muted": "",
            "accent": "text-accent",
        }[tone]
        style = "dim" if tone == "muted" else self._styles.get(var, "")
        return Text(text, style=f"bold {style}" if tone in ("ok", "bad") else style)
