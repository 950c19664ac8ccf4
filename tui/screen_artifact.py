"""One artifact: its versions, its history (who signed, who authorized moves), verify now."""

from __future__ import annotations

from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.content import Content
from textual.widgets import DataTable, Static

from appliance.history import artifact_history
from appliance.store import find
from appliance.truststore import load_trust
from appliance.verify import verify_record
from bundles.errors import ApplianceError
from tui import fmt
from tui.base import SubScreen, cell, footer, header
from tui.messages import VerifyFinished
from tui.model import Problem, opened
from tui.widget_history import HistoryView


class ArtifactScreen(SubScreen):
    BINDINGS = [
        Binding("v", "verify", "Verify now", id="artifact.verify"),
        Binding("b", "rollback", "Rollback", id="artifact.rollback"),
        Binding("f", "filter_history", "Filter", id="artifact.filter"),
        Binding("escape", "back", "Back", id="back"),
    ]

    def __init__(self, name: str, version: str | None = None) -> None:
        super().__init__()
        self.artifact = name
        self.selected = version
        self.versions: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.active: str | None = None
        self.verifying = False

    def compose(self) -> ComposeResult:
        yield header()
        yield Static(id="artifact-info")
        yield DataTable(id="versions", cursor_type="row")
        yield HistoryView()  # tui/widget_history.py: the events, the filter, the detail
        yield Static(id="verify-result")
        yield footer()

    def on_mount(self) -> None:
        self.title = "Artifact"
        self.sub_title = self.artifact
        self.query_one("#versions", DataTable).add_columns(
            "Version", "Rel.", "Size", "Active", "Imported (UTC)", "BLAKE3"
        )
        self.refresh_data()

    def on_screen_resume(self) -> None:
        before = self.events[-1]["seq"] if self.events else None
        self.refresh_data()
        after = self.events[-1]["seq"] if self.events else None
        if after != before and not self.verifying:
            # a verdict is about the state it was reached in: a rollback or an import since
            # makes it stale, so it goes (press v to verify again)
            self.query_one("#verify-result", Static).update("")

    def refresh_data(self) -> None:
        info = self.query_one("#artifact-info", Static)
        try:
            with opened(self.app_.home) as db:
                h = artifact_history(db, self.artifact)
        except ApplianceError as e:
            info.update(Content.styled(f"[{e.code}] {e.message}", "$text-error"))
            return
        self.active = h["active"]
        self.versions = h["versions"]
        self.events = h["events"]
        stream = self.versions[-1]["stream"] if self.versions else "-"
        info.update(
            Content.assemble(
                (self.artifact, "bold"),
                f" {fmt.glyphs().dot} active {self.active or 'none'}"
                f" {fmt.glyphs().dot} stream {stream} {fmt.glyphs().dot} "
                f"{len(self.versions)} versions stored",
            )
        )
        tone = self.app_.tone
        versions = self.query_one("#versions", DataTable)
        versions.clear()
        for v in self.versions:
            versions.add_row(
                cell(v["version"]),
                str(v["release"]),
                fmt.size(v["size"]),
                tone(f"{fmt.glyphs().bullet} active", "ok") if v["active"] else tone("-", "muted"),
                fmt.stamp(v["imported_at"]),
                v["digest"]["blake3"][:12],
            )
        row = next(
            (i for i, v in enumerate(self.versions) if v["version"] == self.selected),
            next((i for i, v in enumerate(self.versions) if v["active"]), 0),
        )
        if self.versions:
            versions.move_cursor(row=row)
        self.query_one(HistoryView).show(self.events)

    def _selected_version(self) -> str | None:
        if not self.versions:
            return None
        row = self.query_one("#versions", DataTable).cursor_row
        return str(self.versions[max(0, min(row, len(self.versions) - 1))]["version"])

    # --- verify now (worker thread) --------------------------------------------------

    def action_verify(self) -> None:
        version = self._selected_version()
        if version is None or self.verifying:
            return
        self.verifying = True
        self.query_one("#verify-result", Static).update(
            Content.styled(
                f"Verifying {self.artifact}@{version}: re-hashing{fmt.glyphs().ellipsis}",
                "$text-warning",
            )
        )
        self.verify_now(version)

    @work(thread=True, exclusive=True, group="verify")
    def verify_now(self, version: str) -> None:
        try:
            with opened(self.app_.home) as db:
                trust = load_trust(db)
                record = find(db, self.artifact, version)
                status = verify_record(self.app_.home, db, trust, record)
        except ApplianceError as e:
            self.post_message(VerifyFinished(None, Problem.of(e)))
            return
        self.post_message(VerifyFinished(status, None))

    def on_verify_finished(self, message: VerifyFinished) -> None:
        self.verifying = False
        out = self.query_one("#verify-result", Static)
        s = message.status
        if s is not None and s.status == "ok":
            out.update(
                Content.assemble(
                    (f"{fmt.glyphs().ok} VERIFIED ", "bold $text-success"),
                    f"{s.record.name}@{s.record.version}: "
                    f"BLAKE3 {s.record.digest[:16]}{fmt.glyphs().ellipsis} "
                    f"matches, {fmt.size(s.record.size)}; signers meet today's trust",
                )
            )
            return
        if s is not None:
            code, text = s.code or s.status, s.message or s.status
        else:
            assert message.problem is not None
            code, text = message.problem.code, message.problem.message
        out.update(
            Content.assemble(
                (f"{fmt.glyphs().bad} FAILED ", "bold $text-error"),
                (f"[{code}] ", "$text-error"),
                text,
            )
        )

    def action_filter_history(self) -> None:
        self.query_one(HistoryView).next_filter()

    # --- rollback -----------------------------------------------------------------

    def action_rollback(self) -> None:
        from tui.screen_rollback import RollbackScreen

        self.app.push_screen(RollbackScreen(self.artifact))
