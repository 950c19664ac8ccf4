"""Unacknowledged alarms, shown first on Home: what happened, when, what to do.

The list and the acknowledgement are the core's (``appliance.watch.alarms``,
``acknowledge``): this widget only formats them. It reads the log in a worker
thread, every ``poll_interval`` seconds, and is hidden while there is nothing
to show. ``x`` acknowledges the selected alarm after a confirmation: the same
``alarm_ack`` audit event as ``appliance alarms --ack SEQ``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.message import Message
from textual.widgets import DataTable, Static

from appliance.watch.alarms import RecordedAlarm, acknowledge, alarms
from bundles.errors import ApplianceError
from tui.base import cell
from tui.model import opened

if TYPE_CHECKING:
    from tui.app import ApplianceApp


class AlarmsLoaded(Message):
    def __init__(self, found: list[RecordedAlarm], error: str | None = None) -> None:
        super().__init__()
        self.found = found
        self.error = error


class AlarmsPanel(Vertical):
    DEFAULT_CSS = """
    AlarmsPanel { display: none; height: auto; max-height: 12; border: heavy $error; }
    AlarmsPanel.-shown { display: block; }
    AlarmsPanel #alarm-title { color: $text-error; text-style: bold; }
    AlarmsPanel #alarm-advice { color: $text-warning; height: auto; }
    AlarmsPanel DataTable { max-height: 6; margin: 0; }
    """
    BINDINGS = [Binding("x", "acknowledge", "Acknowledge alarm", id="alarms.ack")]

    def __init__(self) -> None:
        super().__init__(id="alarms")
        self.found: list[RecordedAlarm] = []

    @property
    def app_(self) -> ApplianceApp:
        return cast("ApplianceApp", self.app)

    def compose(self) -> ComposeResult:
        yield Static(id="alarm-title")
        yield DataTable(id="alarm-table", cursor_type="row")
        yield Static(id="alarm-advice")

    def on_mount(self) -> None:
        self.query_one(DataTable).can_focus = False  # hidden: never take Home's focus
        self.query_one(DataTable).add_columns("#", "When (UTC)", "Alarm", "What")
        self.load()
        self.set_interval(self.app_.poll_interval, self.load)

    @work(thread=True, exclusive=True, group="alarms")
    def load(self) -> None:
        try:
            with opened(self.app_.home) as db:
                found = alarms(db)
        except ApplianceError as e:
            self.post_message(AlarmsLoaded([], f"[{e.code}] {e.message}"))
            return
        self.post_message(AlarmsLoaded(found))

    def on_alarms_loaded(self, message: AlarmsLoaded) -> None:
        if [a.seq for a in message.found] == [a.seq for a in self.found]:
            return
        self.found = message.found
        self.set_class(bool(self.found), "-shown")
        table = self.query_one(DataTable)
        table.can_focus = bool(self.found)
        if not self.found:
            return
        n = len(self.found)
        self.query_one("#alarm-title", Static).update(
            f"{n} unacknowledged alarm{'s' if n > 1 else ''}: the store or its state "
            "changed outside the appliance (x: acknowledge)"
        )
        table.clear()
        for a in self.found:
            table.add_row(
                str(a.seq),
                a.at.replace("T", " ").rstrip("Z"),
                cell(a.code),
                cell(f"{a.subject}: {a.message}"),
                key=str(a.seq),
            )
        self._show_advice(0)
        table.focus()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_advice(event.cursor_row)

    def _show_advice(self, row: int) -> None:
        if self.found:
            a = self.found[max(0, min(row, len(self.found) - 1))]
            self.query_one("#alarm-advice", Static).update(
                Content.assemble(("What to do: ", "bold"), a.advice)
            )

    def selected(self) -> RecordedAlarm | None:
        if not self.found:
            return None
        row = self.query_one(DataTable).cursor_row
        return self.found[max(0, min(row, len(self.found) - 1))]

    def action_acknowledge(self) -> None:
        alarm = self.selected()
        if alarm is None:
            return
        from tui.screen_confirm import ConfirmScreen

        def answered(yes: bool | None) -> None:
            if yes:
                self.ack(alarm.seq)

        question = Content.assemble(
            ("Acknowledge alarm ", "bold"),
            f"{alarm.seq} [{alarm.code}] {alarm.subject}?\n",
            "This records that you have seen it (an audit event); it repairs nothing.",
        )
        self.app.push_screen(ConfirmScreen(question, yes="Acknowledge"), answered)

    @work(thread=True, exclusive=True, group="alarms-ack")
    def ack(self, seq: int) -> None:
        try:
            with opened(self.app_.home) as db:
                acknowledge(db, seq, "acknowledged in the TUI")
        except ApplianceError as e:
            self.app.call_from_thread(self.app.notify, f"[{e.code}] {e.message}", severity="error")
            return
        self.app.call_from_thread(self.app.notify, f"Alarm {seq} acknowledged")
        self.load()
