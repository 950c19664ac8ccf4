"""Inventory: every stored artifact version, which one is active, digests and sizes."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static

from appliance.store import Record
from bundles.errors import ApplianceError
from tui import fmt
from tui.base import SubScreen, cell, footer, header
from tui.model import inventory


class InventoryScreen(SubScreen):
    BINDINGS = [
        Binding("enter", "open", "Open", id="inventory.open", priority=True),
        Binding("escape", "back", "Back", id="back"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.records: list[Record] = []

    def compose(self) -> ComposeResult:
        yield header()
        yield Static(id="inventory-summary")
        yield DataTable(id="inventory", cursor_type="row", zebra_stripes=True)
        yield footer()

    def on_mount(self) -> None:
        self.title = "Inventory"
        self.query_one("#inventory", DataTable).add_columns(
            "Name", "Version", "Active", "Size", "Imported (UTC)", "BLAKE3"
        )
        self.refresh_data()

    def on_screen_resume(self) -> None:
        self.refresh_data()

    def refresh_data(self) -> None:
        table = self.query_one("#inventory", DataTable)
        keep = table.cursor_row
        table.clear()
        summary = self.query_one("#inventory-summary", Static)
        try:
            self.records = inventory(self.app_.home)
        except ApplianceError as e:
            summary.update(f"[{e.code}] {e.message}")
            return
        tone = self.app_.tone
        for r in self.records:
            table.add_row(
                cell(r.name),
                cell(r.version),
                tone(f"{fmt.glyphs().bullet} active", "ok") if r.active else tone("-", "muted"),
                fmt.size(r.size),
                fmt.stamp(r.imported_at),
                r.digest[:12],
            )
        names = len({r.name for r in self.records})
        total = sum(r.size for r in self.records)
        summary.update(
            f"{names} artifacts, {len(self.records)} versions, {fmt.size(total)} stored. "
            "Enter opens an artifact: history, verify now, rollback."
            if self.records
            else "Nothing is installed yet. Import a bundle from the Home screen."
        )
        if self.records:
            table.move_cursor(row=min(keep, len(self.records) - 1))

    @on(DataTable.RowSelected, "#inventory")
    def _selected(self) -> None:
        self.action_open()

    def action_open(self) -> None:
        if not self.records:
            return
        from tui.screen_artifact import ArtifactScreen

        row = self.query_one("#inventory", DataTable).cursor_row
        record = self.records[max(0, min(row, len(self.records) - 1))]
        self.app.push_screen(ArtifactScreen(record.name, record.version))
