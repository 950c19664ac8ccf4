"""Verify and import: a progress bar per artifact and overall, throughput, time left, cancel.

The import runs in a thread worker (``appliance.importer.import_bundle``); its
progress callback, called from the importer's hashing threads, only posts
throttled messages. Cancel sets the ``threading.Event`` the importer checks
between chunks: the import stops and nothing is promoted.
"""

from __future__ import annotations

import threading

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.content import Content
from textual.widgets import ProgressBar, Static
from textual.worker import Worker, WorkerState

from appliance.db import sqlite_errors
from appliance.importer import ImportResult, import_bundle
from bundles.errors import ApplianceError
from tui import fmt
from tui.base import SubScreen, footer, header
from tui.messages import ImportFinished, ImportProgress
from tui.model import Problem, Review
from tui.widget_progress import progress_bar

THROTTLE_S = 0.1  # at most 10 progress messages a second per artifact


class ImportScreen(SubScreen):
    BINDINGS = [
        Binding("c", "cancel", "Cancel", id="import.cancel"),
        Binding("escape", "back_or_cancel", "Back", id="back"),
    ]

    def __init__(self, review: Review, *, dry_run: bool = False) -> None:
        super().__init__()
        assert review.manifest is not None
        self.review = review
        self.dry_run = dry_run
        self.cancel = threading.Event()
        self.artifacts = list(review.manifest.artifacts)
        self.index = {a.name: i for i, a in enumerate(self.artifacts)}
        self.done: dict[str, int] = {a.name: 0 for a in self.artifacts}
        self.total = sum(a.size for a in self.artifacts)
        self.running = True
        self.started = 0.0
        self.finished: ImportFinished | None = None
        self.results: list[tuple[str, str, str]] = []  # artifact, pass/FAIL/..., reason

    def compose(self) -> ComposeResult:
        yield header()
        with VerticalScroll(id="import"):
            yield Static(id="import-status")
            with Horizontal(classes="art-row overall"):
                yield Static("Overall", classes="art-label")
                yield progress_bar(max(self.total, 1), id="overall")
            for i, a in enumerate(self.artifacts):
                with Horizontal(classes="art-row"):
                    yield Static(Content(f"{a.ref} {fmt.size(a.size)}"), classes="art-label")
                    yield progress_bar(max(a.size, 1), id=f"art-{i}")
            yield Static(id="import-result")
            yield Static(id="import-results")
        yield footer()

    def on_mount(self) -> None:
        m = self.review.manifest
        assert m is not None
        self.title = "Verify only" if self.dry_run else "Verify and import"
        self.sub_title = f"{m.stream} #{m.sequence}"
        self.app_.running_imports.add(self.cancel)
        self.started = self.app_.clock()
        self._status()
        self.run_import()

    def on_unmount(self) -> None:
        self.cancel.set()
        self.app_.running_imports.discard(self.cancel)

    # --- the worker --------------------------------------------------------------

    @work(thread=True, exclusive=True, group="import", exit_on_error=False)
    def run_import(self) -> None:
        last: dict[str, float] = {}
        clock = self.app_.clock
        hook = self.app_.progress_hook

        def progress(name: str, done: int, size: int) -> None:
            now = clock()
            if done >= size or now - last.get(name, -1.0) >= THROTTLE_S:
                last[name] = now
                self.post_message(ImportProgress(name, done, size))
            if hook is not None:
                hook(name, done, size)

        try:
            with sqlite_errors():
                result = import_bundle(
                    self.app_.home,
                    self.review.path,
                    dry_run=self.dry_run,
                    witness_path=self.app_.witness,
                    progress=progress,
                    cancel=self.cancel,
                    # what the operator reviewed, and nothing else (media_changed)
                    expect_identity=self.review.identity,
                )
        except ApplianceError as e:
            self.post_message(ImportFinished(None, Problem.of(e)))
            return
        self.post_message(ImportFinished(result, None))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state is WorkerState.ERROR and self.running:
            error = event.worker.error
            self._finish(ImportFinished(None, Problem("internal_error", repr(error))))

    # --- messages from the worker -------------------------------------------------------

    def on_import_progress(self, message: ImportProgress) -> None:
        i = self.index.get(message.name)
        if i is None:
            return
        self.done[message.name] = message.done
        self.query_one(f"#art-{i}", ProgressBar).update(progress=message.done)
        self.query_one("#overall", ProgressBar).update(progress=sum(self.done.values()))
        self._status()

    def on_import_finished(self, message: ImportFinished) -> None:
        self._finish(message)

    # --- display ------------------------------------------------------------------

    def _status(self) -> None:
        done = sum(self.done.values())
        elapsed = self.app_.clock() - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        left = (self.total - done) / rate if rate > 0 else None
        text = f"{fmt.size(done)} of {fmt.size(self.total)}"
        if rate > 0:
            text += f" {fmt.glyphs().dot} {fmt.rate(rate)}"
        if self.running:
            text += (
                f" {fmt.glyphs().dot} about {fmt.duration(left)} left" if left is not None else ""
            )
            if self.cancel.is_set():
                text += f" {fmt.glyphs().dot} cancelling{fmt.glyphs().ellipsis}"
        self.query_one("#import-status", Static).update(
            Content.assemble(("Verifying " if self.running else "Verified ", "bold"), text)
        )

    def _finish(self, message: ImportFinished) -> None:
        if not self.running:
            return
        self.running = False
        self.finished = message
        self._status()
        self.refresh_bindings()
        self.query_one("#import-result", Static).update(self._summary(message))
        rows = [
            (a.ref, *self._artifact_result(a.name, a.ref, a.size, message)) for a in self.artifacts
        ]
        self.results = [(ref, result, reason) for ref, result, reason, _ in rows]
        width = max([len("Artifact"), *(len(ref) for ref, *_ in rows)]) + 2
        lines: list[str | tuple[str, str]] = [
            (f"{'Artifact':<{width}}{'Result':<13}Reason", "bold")
        ]
        for ref, result, reason, ok in rows:
            lines += [
                "\n",
                f"{ref:<{width}}",
                (f"{result:<13}", "bold $text-success" if ok else "bold $text-error"),
                reason,
            ]
        self.query_one("#import-results", Static).update(Content.assemble(*lines))
        scroll = self.query_one("#import", VerticalScroll)
        self.call_after_refresh(scroll.scroll_end, animate=False)

    def _summary(self, message: ImportFinished) -> Content:
        r: ImportResult | None = message.result
        if r is not None:
            new = sum(a["status"] == "new" for a in r.artifacts)
            if r.dry_run:
                head = (f"{fmt.glyphs().ok} VERIFIED (dry run)", "bold $text-success")
                tail = f": {len(r.artifacts)} artifacts match their signed digests; nothing stored"
            else:
                head = (f"{fmt.glyphs().ok} IMPORTED", "bold $text-success")
                tail = (
                    f": {r.stream} #{r.sequence}, {new} new and "
                    f"{len(r.artifacts) - new} already present; new versions are active"
                )
            return Content.assemble(head, tail)
        p = message.problem
        assert p is not None
        word = "CANCELLED" if p.code == "cancelled" else "REFUSED"
        return Content.assemble(
            (f"{fmt.glyphs().bad} {word}: ", "bold $text-error"),
            (p.headline, "bold"),
            "\n",
            (f"[{p.code}] ", "$text-error"),
            p.message,
            "\n",
            ("Nothing was imported: the store is unchanged.", "$text-muted"),
        )

    def _artifact_result(
        self, name: str, ref: str, size: int, message: ImportFinished
    ) -> tuple[str, str, bool]:
        if message.result is not None:
            status = next(
                (a["status"] for a in message.result.artifacts if a["name"] == name), "new"
            )
            if message.result.dry_run:
                return "pass", "digest matches (dry run)", True
            return "pass", "stored, active" if status == "new" else "already present", True
        p = message.problem
        assert p is not None
        if ref in p.message or f"'{name}'" in p.message:
            return "FAIL", f"{p.code} (see above)", False
        if self.done.get(name, 0) >= size and p.code not in ("cancelled",):
            return "read", "read in full; the bundle was refused as a whole", False
        if p.code == "cancelled":
            return "stopped", "cancelled before it was verified", False
        return "not checked", f"stopped: {p.code}", False

    # --- actions --------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel":
            return self.running
        return True

    def action_cancel(self) -> None:
        if self.running:
            self.cancel.set()
            self._status()

    def action_back_or_cancel(self) -> None:
        if self.running:
            self.action_cancel()
        else:
            self.app.pop_screen()
