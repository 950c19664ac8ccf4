"""Bundle review: what the bundle is, who signed it, whether policy allows it; no hashing."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.content import Content
from textual.widgets import DataTable, Static

from appliance.modelsig import ModelReview, review_models
from appliance.trust import key_text
from tui import fmt
from tui.base import SubScreen, cell, footer, header
from tui.messages import ReviewReady
from tui.model import Problem, Review, review_bundle


def mark(ok: bool | None) -> tuple[str, str]:
    """A check's mark, padded so the labels after it line up (``OK``, ``X``, ``-``)."""
    g = fmt.glyphs()
    width = max(len(g.ok), len(g.bad), len(g.skip)) + 1
    if ok is None:
        return (g.skip.ljust(width), "$text-muted")
    if ok:
        return (g.ok.ljust(width), "bold $text-success")
    return (g.bad.ljust(width), "bold $text-error")


def verdict(review: Review) -> Content:
    if review.allowed:
        return Content.assemble(
            (f"{fmt.glyphs().ok} ALLOWED BY POLICY", "bold $text-success"),
            " (nothing hashed yet)\n",
            "Press i to verify every artifact and import it, v to verify only.",
        )
    problem = review.problem
    assert problem is not None or not review.verified
    headline = problem.headline if problem else "Not verified"
    parts: list[str | tuple[str, str]] = [
        (f"{fmt.glyphs().bad} REFUSED: ", "bold $text-error"),
        (headline, "bold"),
        "\n",
    ]
    if problem:
        parts += [(f"[{problem.code}] ", "$text-error"), problem.message, "\n"]
    parts.append(("Nothing will be imported; no artifact was hashed.", "$text-muted"))
    return Content.assemble(*parts)


def model_lines(m: ModelReview | None) -> list[str | tuple[str, str]]:
    """Issue 17: the model signatures (OpenSSF model-signing) the bundle carries."""
    if m is None or (m.ok and not m.signatures and not m.required):
        return []
    out: list[str | tuple[str, str]] = []
    if m.problem is not None:
        return ["\n", mark(False), ("Model sig. ", "bold"), f"[{m.problem[0]}] {m.problem[1]}"]
    for s in m.signatures:
        out += ["\n", mark(True), ("Model sig. ", "bold")]
        out.append(f"{s.model}: signed by {key_text(s.keyid, s.label)}, {len(s.files)} files")
    return out


class ReviewScreen(SubScreen):
    BINDINGS = [
        Binding("i", "import", "Verify+import", id="review.import"),
        Binding("v", "verify_only", "Verify only", id="review.verify"),
        Binding("escape", "back", "Back", id="back"),
    ]

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.review: Review | None = None
        self.models: ModelReview | None = None

    def compose(self) -> ComposeResult:
        yield header()
        with VerticalScroll(id="review"):
            yield Static(f"Reading the signed manifest{fmt.glyphs().ellipsis}", id="verdict")
            yield Static(id="facts")
            yield Static("Signatures", classes="section-title")
            yield DataTable(id="signatures", cursor_type="none", show_cursor=False)
            yield Static("Artifacts", classes="section-title")
            yield DataTable(id="artifacts", cursor_type="row")
        yield footer()

    def on_mount(self) -> None:
        self.title = "Review bundle"
        self.sub_title = self.path.name
        self.query_one("#signatures", DataTable).add_columns("Key id", "Role", "Status")
        self.query_one("#artifacts", DataTable).add_columns(
            "Name", "Version", "Rel.", "Size", "Status", "BLAKE3"
        )
        self.load()

    @work(thread=True, exclusive=True, group="review")
    def load(self) -> None:
        review = review_bundle(self.app_.home, self.path, self.app_.witness)
        self.models = review_models(self.app_.home, self.path)  # issue 17: who signed the model
        if self.models is not None and self.models.problem and review.problem is None:
            review = replace(review, problem=Problem(*self.models.problem))  # the import refuses
        self.post_message(ReviewReady(review))

    def on_review_ready(self, message: ReviewReady) -> None:
        self.review = message.review
        self.refresh_data()
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("import", "verify_only"):
            return True if self.review is not None and self.review.allowed else None
        return True

    def refresh_data(self) -> None:
        r = self.review
        if r is None:
            return
        verdict_widget = self.query_one("#verdict", Static)
        verdict_widget.update(verdict(r))
        verdict_widget.set_class(r.allowed, "allowed")
        verdict_widget.set_class(not r.allowed, "refused")
        facts = self.query_one("#facts", Static)
        m = r.manifest
        if m is None:
            facts.update(Content.styled(f"{r.path}", "$text-muted"))
            return
        lines: list[str | tuple[str, str] | Content] = [
            ("Bundle   ", "bold"),
            f"{r.path.name}: {fmt.count(len(m.artifacts), 'artifact')}, "
            f"{fmt.size(r.total_size)}, "
            f"issued {fmt.when(m.issued_at)}",
        ]
        if not r.verified:
            lines.append(("  (UNVERIFIED: shown as claimed)", "bold $text-warning"))
        for c in r.checks:
            lines += ["\n", mark(c.ok), (f"{c.label:<10} ", "bold"), c.text]
        lines += model_lines(self.models)
        facts.update(Content.assemble(*lines))
        tone = self.app_.tone
        sigs = self.query_one("#signatures", DataTable)
        sigs.clear()
        for s in r.signatures:
            sigs.add_row(
                cell(key_text(s.keyid, s.label)),
                cell(s.role),
                tone(s.status, "ok" if s.counts else "bad"),
            )
        arts = self.query_one("#artifacts", DataTable)
        arts.clear()
        for a in r.artifacts:
            arts.add_row(
                cell(a.name),
                cell(a.version),
                str(a.release),
                fmt.size(a.size),
                tone(a.status, "ok" if a.status in ("new", "present") else "bad"),
                a.digest[:16],
            )

    def _start(self, dry_run: bool) -> None:
        if self.review is None or not self.review.allowed:
            return
        from tui.screen_import import ImportScreen

        self.app.switch_screen(ImportScreen(self.review, dry_run=dry_run))

    def action_import(self) -> None:
        self._start(dry_run=False)

    def action_verify_only(self) -> None:
        self._start(dry_run=True)
