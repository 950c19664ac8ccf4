"""The audit log: every decision, newest first, and whether the hash chain is intact;
the highlighted event whole (every field) in a scrollable pane below."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.content import Content
from textual.widgets import DataTable, Static

from bundles.errors import ApplianceError
from tui import fmt
from tui.base import SubScreen, cell, footer, header
from tui.model import AuditLog, audit_log, event_subject
from tui.widget_event import EventDetail


class AuditScreen(SubScreen):
    BINDINGS = [
        Binding("r", "reload", "Re-verify", id="audit.reload"),
        Binding("escape", "back", "Back", id="back"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.events_log = AuditLog()

    def compose(self) -> ComposeResult:
        yield header()
        yield Static(id="chain-status")
        yield DataTable(id="audit-events", cursor_type="row", zebra_stripes=True)
        yield EventDetail("No events yet.", detail_first=True, id="event-detail")
        yield footer()

    def on_mount(self) -> None:
        self.title = "Audit log"
        self.query_one("#audit-events", DataTable).add_columns(
            "#", "Time (UTC)", "Event", "Outcome", "Subject"
        )
        self.refresh_data()

    def action_reload(self) -> None:
        self.refresh_data()
        self.notify("Audit chain re-verified", timeout=2)

    def refresh_data(self) -> None:
        status = self.query_one("#chain-status", Static)
        try:
            self.events_log = audit_log(self.app_.home)
        except ApplianceError as e:
            status.update(Content.styled(f"[{e.code}] {e.message}", "bold $text-error"))
            return
        if self.events_log.problem is None:
            status.update(
                Content.assemble(
                    (f"{fmt.glyphs().ok} CHAIN INTACT", "bold $text-success"),
                    f": {self.events_log.count} events, "
                    f"head {self.events_log.head[:16]}{fmt.glyphs().ellipsis}",
                )
            )
        else:
            status.update(
                Content.assemble(
                    (f"{fmt.glyphs().bad} CHAIN BROKEN", "bold $text-error"),
                    f" [{self.events_log.problem.code}]: {self.events_log.problem.message}",
                )
            )
        table = self.query_one("#audit-events", DataTable)
        table.clear()
        tone = self.app_.tone
        for ev in reversed(self.events_log.events):
            outcome = ev["outcome"]
            table.add_row(
                str(ev["seq"]),
                ev["ts"].replace("T", " ").rstrip("Z"),
                cell(ev["type"]),
                tone(outcome, "bad" if outcome == "rejected" else "ok"),
                cell(event_subject(ev) + (f" [{ev['code']}]" if ev["code"] else "")),
            )
        self._show(0)

    @on(DataTable.RowHighlighted, "#audit-events")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show(event.cursor_row)

    def _show(self, row: int) -> None:
        detail = self.query_one("#event-detail", EventDetail)
        if not self.events_log.events:
            detail.show(None)
            return
        e = self.events_log.events[::-1][max(0, min(row, len(self.events_log.events) - 1))]
        when = str(e["ts"]).replace("T", " ").rstrip("Z")
        detail.show(e, f"#{e['seq']} {e['type']} {e['outcome']} {fmt.glyphs().dot} {when}")
