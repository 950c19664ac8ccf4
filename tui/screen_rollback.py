"""Rollback: choose an authorization file, see what it authorizes and whether it is valid,
confirm, see the result. ``appliance.rollback.apply_rollback`` checks everything again."""

from __future__ import annotations

from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.content import Content
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from appliance.db import sqlite_errors
from appliance.rollback import RollbackResult, apply_rollback, read_authorization
from bundles.errors import ApplianceError
from tui import fmt
from tui.base import SubScreen, footer, header
from tui.messages import RollbackFinished, RollbackPreviewed
from tui.model import Problem, RollbackPreview, preview_rollback
from tui.screen_confirm import ConfirmScreen
from tui.screen_review import mark


class RollbackScreen(SubScreen):
    BINDINGS = [
        Binding("ctrl+r", "apply", "Roll back", id="rollback.apply"),
        Binding("escape", "back", "Back", id="back"),
    ]

    def __init__(self, name: str) -> None:
        super().__init__()
        self.artifact = name
        self.preview: RollbackPreview | None = None
        self.files: list[Path] = []
        self.done = False

    def compose(self) -> ComposeResult:
        yield header()
        with VerticalScroll(id="rollback"):
            yield Static(id="rb-info")
            yield Input(
                placeholder="Path of a rollback authorization (.json), then Enter",
                id="auth-path",
                compact=True,
            )
            yield Static("Authorization files found on media", classes="section-title")
            yield OptionList(id="auth-files")
            yield Static(id="rb-preview")
            yield Static(id="rb-result")
        yield footer()

    def on_mount(self) -> None:
        self.title = "Rollback"
        self.sub_title = self.artifact
        self.query_one("#auth-path", Input).cursor_blink = self.app_.cursor_blink
        self.query_one("#rb-info", Static).update(
            Content.assemble(
                "Move the active version of ",
                (self.artifact, "bold"),
                " back. It needs an authorization signed by the rollback role; "
                "each one is single use.",
            )
        )
        self.files = [Path(p) for m in self.app_.media for p in m.documents]
        options = self.query_one("#auth-files", OptionList)
        options.clear_options()
        for p in self.files:
            options.add_option(Option(Content(f"{p.name}  ({fmt.tail(str(p.parent), 40)})")))
        if not self.files:
            options.add_option(Option(Content("(none found: type a path above)"), disabled=True))
        else:
            options.highlighted = 0
        self.query_one("#auth-path", Input).focus()

    # --- choosing and previewing ----------------------------------------------------

    @on(Input.Submitted, "#auth-path")
    def _path_entered(self, event: Input.Submitted) -> None:
        if event.value.strip():
            self.check(Path(event.value.strip()).expanduser())

    @on(OptionList.OptionSelected, "#auth-files")
    def _file_chosen(self, event: OptionList.OptionSelected) -> None:
        if 0 <= event.option_index < len(self.files):
            path = self.files[event.option_index]
            self.query_one("#auth-path", Input).value = str(path)
            self.check(path)

    def check(self, path: Path) -> None:
        self.done = False
        self.query_one("#rb-result", Static).update("")
        self.query_one("#rb-preview", Static).update(
            Content.styled(f"Checking {path}{fmt.glyphs().ellipsis}", "$text-warning")
        )
        self.load_preview(path)

    @work(thread=True, exclusive=True, group="rollback")
    def load_preview(self, path: Path) -> None:
        preview = preview_rollback(self.app_.home, self.artifact, path, self.app_.witness)
        self.post_message(RollbackPreviewed(preview))

    def on_rollback_previewed(self, message: RollbackPreviewed) -> None:
        self.preview = message.preview
        self.refresh_data()
        self.refresh_bindings()

    def refresh_data(self) -> None:
        p = self.preview
        if p is None:
            return
        parts: list[str | tuple[str, str] | Content] = []
        if self.done:
            parts += [
                ("AUTHORIZATION SUBMITTED", "bold"),
                ": the result is below; the checks are re-read since\n",
            ]
        elif p.valid:
            parts += [
                (f"{fmt.glyphs().ok} VALID", "bold $text-success"),
                ": press Ctrl+R to roll back (you will be asked to confirm)\n",
            ]
        else:
            assert p.problem is not None
            parts += [
                (f"{fmt.glyphs().bad} NOT VALID: ", "bold $text-error"),
                (p.problem.headline, "bold"),
                "\n",
                (f"[{p.problem.code}] ", "$text-error"),
                p.problem.message,
                "\n",
            ]
        a = p.auth
        if a is not None:
            label = "" if p.verified else "  (UNVERIFIED: shown as claimed)"
            parts += [
                ("Authorizes ", "bold"),
                f"{a.name} -> {a.to_version} (active now: {p.current or '-'})",
                (label, "bold $text-warning"),
                "\n",
                ("Reason     ", "bold"),
                a.reason or "(none given)",
                "\n",
                ("Issued     ", "bold"),
                f"{fmt.when(a.issued_at)} {fmt.glyphs().dot} id {a.id}",
            ]
            if p.signers:
                parts += [
                    "\n",
                    ("Signed by  ", "bold"),
                    ", ".join(fmt.short_id(s) for s in p.signers),
                ]
        for c in p.checks:
            parts += ["\n", mark(c.ok), (f"{c.label:<10} ", "bold"), c.text]
        self.query_one("#rb-preview", Static).update(Content.assemble(*parts))

    # --- applying -------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "apply":
            return (
                True if self.preview is not None and self.preview.valid and not self.done else None
            )
        return True

    def action_apply(self) -> None:
        p = self.preview
        if p is None or not p.valid or p.auth is None or self.done:
            return
        question = Content.assemble(
            ("Roll back? ", "bold"),
            f"{p.name}: active {p.current or '-'} -> {p.auth.to_version}\n",
            f"Reason: {p.auth.reason or '(none given)'}\n",
            (
                "The authorization will be used up. The next load re-hashes the object.",
                "$text-muted",
            ),
        )
        self.app.push_screen(ConfirmScreen(question, yes="Roll back"), self._confirmed)

    def _confirmed(self, answer: bool | None) -> None:
        if not answer or self.preview is None:
            self.query_one("#rb-result", Static).update(
                Content.styled("Not rolled back.", "$text-muted")
            )
            return
        self.query_one("#rb-result", Static).update(
            Content.styled(f"Rolling back{fmt.glyphs().ellipsis}", "$text-warning")
        )
        self.run_rollback(self.preview.path)

    @work(thread=True, exclusive=True, group="rollback")
    def run_rollback(self, path: Path) -> None:
        try:
            data = read_authorization(path)
            with sqlite_errors():
                result = apply_rollback(
                    self.app_.home,
                    self.artifact,
                    data,
                    witness_path=self.app_.witness,
                    source=str(path),
                )
        except ApplianceError as e:
            self.post_message(RollbackFinished(None, Problem.of(e)))
            return
        self.post_message(RollbackFinished(result, None))

    def on_rollback_finished(self, message: RollbackFinished) -> None:
        self.done = True
        self.refresh_data()
        if self.preview is not None:  # no stale verdict: the core re-checks it now
            self.load_preview(self.preview.path)
        self.refresh_bindings()
        self.call_after_refresh(
            self.query_one("#rollback", VerticalScroll).scroll_end, animate=False
        )
        out = self.query_one("#rb-result", Static)
        r: RollbackResult | None = message.result
        if r is not None:
            out.update(
                Content.assemble(
                    (f"{fmt.glyphs().ok} ROLLED BACK ", "bold $text-success"),
                    f"{r.name}: {r.from_version or '-'} -> {r.to_version}, authorized by "
                    + ", ".join(fmt.short_id(s) for s in r.authorized_by)
                    + ". The next load re-hashes it against today's trust.",
                )
            )
        else:
            p = message.problem
            assert p is not None
            out.update(
                Content.assemble(
                    (f"{fmt.glyphs().bad} REFUSED: ", "bold $text-error"),
                    (f"[{p.code}] ", "$text-error"),
                    p.message,
                    ("\nNothing was changed.", "$text-muted"),
                )
            )
