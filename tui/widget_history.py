"""An artifact's history as ``appliance history`` returns it, newest first, with a filter.

The events are ``appliance.history.artifact_history``'s (the CLI's ``history`` command
calls the same function): refused imports whose manifest only named the artifact are
there, marked ``unauth.`` when that manifest's signature had not verified, and events
after a break in the audit chain are marked ``UNVERIFIED``. The filter (``f`` cycles
through ``FILTERS``) only chooses which of those events to show, by their ``type`` and
``outcome``; it decides nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.content import Content
from textual.widgets import DataTable, Static

from tui import fmt
from tui.base import cell
from tui.widget_event import EventDetail

if TYPE_CHECKING:
    from tui.app import ApplianceApp

Event = dict[str, Any]

FILTERS: tuple[tuple[str, Callable[[Event], bool]], ...] = (
    ("all events", lambda e: True),
    ("without loads", lambda e: e["type"] != "load"),
    ("imports and rollbacks", lambda e: e["type"] in ("import", "rollback")),
    ("refusals", lambda e: e["outcome"] == "rejected"),
)

UNVERIFIED = "UNVERIFIED: after a break in the audit chain, not vouched for"


def outcome_text(e: Event) -> str:
    """The Outcome cell: the core's outcome, ``unauth.`` for a refused import that only
    claimed to name the artifact, ``UNVERIFIED`` after a chain break."""
    text = str(e["outcome"])
    if e.get("authenticated") is False:
        text += " unauth."
    if not e.get("verified", True):
        text += " UNVERIFIED"
    return text


def version_text(e: Event) -> str:
    if e.get("version"):
        return str(e["version"])
    return f"{e['claimed_version']} (claimed)" if e.get("claimed_version") else ""


class HistoryView(Vertical):
    """Title with the filter state, the events table, the highlighted event's detail."""

    def __init__(self) -> None:
        super().__init__(id="history-view")
        self.events: list[Event] = []  # as the core returned them, oldest first
        self.shown: list[Event] = []  # the filtered ones, newest first
        self.filter = 0

    def compose(self) -> ComposeResult:
        yield Static(id="history-title", classes="section-title")
        yield DataTable(id="history", cursor_type="row", zebra_stripes=True)
        yield EventDetail("No events yet.", id="event-summary")

    def on_mount(self) -> None:
        self.query_one("#history", DataTable).add_columns(
            "#", "Time (UTC)", "Event", "Version", "Outcome"
        )

    @property
    def app_(self) -> ApplianceApp:
        return cast("ApplianceApp", self.app)

    def show(self, events: list[Event]) -> None:
        """Show ``artifact_history(...)["events"]`` under the current filter."""
        self.events = events
        self._fill()

    def next_filter(self) -> None:
        self.filter = (self.filter + 1) % len(FILTERS)
        self._fill()

    def _fill(self) -> None:
        label, keep = FILTERS[self.filter]
        self.shown = [e for e in reversed(self.events) if keep(e)]
        dot = fmt.glyphs().dot
        following = FILTERS[(self.filter + 1) % len(FILTERS)][0]
        state = (
            f"{fmt.count(len(self.events), 'event')}"
            if self.filter == 0
            else f"{label}: {len(self.shown)} of {len(self.events)} events"
        )
        self.query_one("#history-title", Static).update(
            Content.assemble(
                "History ",
                (
                    f"{dot} {state} {dot} f: {following}",
                    "not bold $text-muted",
                ),
            )
        )
        table = self.query_one("#history", DataTable)
        table.clear()
        tone = self.app_.tone
        for ev in self.shown:
            table.add_row(
                str(ev["seq"]),
                str(ev["ts"]).replace("T", " ").rstrip("Z"),
                cell(ev["type"]),
                cell(version_text(ev)),
                tone(outcome_text(ev), "bad" if ev["outcome"] == "rejected" else "ok"),
            )
        self._show_event(0)

    @on(DataTable.RowHighlighted, "#history")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_event(event.cursor_row)

    def _show_event(self, row: int) -> None:
        detail = self.query_one("#event-summary", EventDetail)
        if not self.shown:
            detail.empty = "No events yet." if not self.events else "No events match the filter."
            detail.show(None)
            return
        e = self.shown[max(0, min(row, len(self.shown) - 1))]
        head = str(e["summary"]) + ("" if e.get("verified", True) else f" [{UNVERIFIED}]")
        detail.show({k: v for k, v in e.items() if k != "summary"}, head)
