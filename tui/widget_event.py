"""The detail pane of an audit or history event: every field, wrapped, scrollable.

The rows come from ``tui.fmt.event_fields``; the pane is a ``VerticalScroll`` (focus it
with Tab, then the arrow keys and Page Up/Down scroll), so a long event is never cut off.
"""

from __future__ import annotations

from collections.abc import Mapping

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.content import Content
from textual.widgets import Static

from tui import fmt


class EventDetail(VerticalScroll):
    """Shows one event; ``show(None)`` shows ``empty``."""

    def __init__(
        self, empty: str = "No event.", *, detail_first: bool = False, id: str | None = None
    ) -> None:
        super().__init__(id=id, classes="event-detail")
        self.empty = empty
        self.detail_first = detail_first  # the audit log: what happened before the chain

    def compose(self) -> ComposeResult:
        yield Static(classes="event-detail-text")

    def show(self, event: Mapping[str, object] | None, head: str = "") -> None:
        """``head`` (bold) first, then every field of ``event`` as ``label: text``."""
        text = self.query_one(".event-detail-text", Static)
        if event is None:
            text.update(Content.styled(self.empty, "$text-muted"))
            return
        parts: list[str | tuple[str, str]] = [(head, "bold")] if head else []
        for label, value in fmt.event_fields(event, self.detail_first):
            parts += ["\n" if parts else "", (f"{label}: ", "$text-accent"), value]
        text.update(Content.assemble(*parts))
        self.scroll_home(animate=False)
