"""Help: the keys of the screen underneath and what each does, from its bindings.

The list is read from the bindings active on that screen (its own ``BINDINGS``,
those of the focused widget's chain that this package defines, and the app's),
so it cannot drift from what the keys do. ``?`` or ``F1`` opens it, ``Esc`` closes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen, Screen
from textual.widgets import Static


@dataclass(frozen=True)
class KeyHelp:
    """One key: how the footer names it, what it does, and whether it works right now."""

    key: str
    description: str
    enabled: bool
    everywhere: bool  # an app key (the same on every screen), not this screen's


def _ours(node: object) -> bool:
    """Bindings of the app, of our screens and of our widgets (not textual's own widgets:
    a table's cursor keys are the table's, the same on every screen)."""
    return isinstance(node, (App, Screen)) or type(node).__module__.startswith("tui.")


def screen_keys(app: App[Any], screen: Screen[Any]) -> list[KeyHelp]:
    """The keys active on ``screen``, one row per action (its keys joined with " / ", its
    description ours when one of the keys is ours, else textual's tooltip): the screen's
    and its widgets' first, the app's last; within each, ours (they have an id) before
    textual's own (focus, copy, palette)."""
    groups: dict[tuple[int, str], tuple[tuple[bool, bool], list[str], str, bool]] = {}
    for active in screen.active_bindings.values():
        b, node = active.binding, active.node
        if not _ours(node):
            continue
        shown = app.get_key_display(b)
        slot = (id(node), b.action)
        rank = (isinstance(node, App), b.id is None)
        described = b.description if b.id else (b.tooltip or b.description or b.action)
        if slot not in groups:
            groups[slot] = (rank, [shown], described, active.enabled)
        elif rank < groups[slot][0]:  # ours first, with our description
            groups[slot] = (rank, [shown, *groups[slot][1]], described, active.enabled)
        else:
            groups[slot][1].append(shown)
    ordered = sorted(groups.values(), key=lambda g: g[0])  # stable within a rank
    return [KeyHelp(" / ".join(k), text, on, rank[0]) for rank, k, text, on in ordered]


class HelpScreen(ModalScreen[None]):
    """The keys of the screen it was opened over; ``Esc`` (or ``?``/``F1`` again) closes it."""

    BINDINGS = [
        Binding("escape", "close", "Close", id="help.close"),
        Binding("question_mark,f1", "close", "Close", id="help.again", show=False),
    ]

    def __init__(self, title: str, keys: list[KeyHelp]) -> None:
        super().__init__()
        self.screen_title = title
        self.keys = keys

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Static(
                Content.assemble(
                    (f"Keys: {self.screen_title}", "bold"), ("  (Esc closes)", "$text-muted")
                ),
                id="help-title",
            )
            yield Static(self._table(), id="help-keys")

    def _table(self) -> Content:
        width = max([3, *(len(k.key) for k in self.keys)]) + 2
        parts: list[str | tuple[str, str]] = []
        for group, heading in ((False, "On this screen"), (True, "Everywhere")):
            keys = [k for k in self.keys if k.everywhere is group]
            parts += [("\n\n" if parts else "") + heading, *(["\n"] if keys else [])]
            if not keys:
                parts.append(("\n(none)", "$text-muted"))
            for i, k in enumerate(keys):
                parts.append(("\n" if i else "") + "  ")
                parts.append((f"{k.key:<{width}}", "bold $text-accent"))
                parts.append(k.description if k.enabled else f"{k.description} (not now)")
        return Content.assemble(*parts)

    def action_close(self) -> None:
        self.dismiss(None)
