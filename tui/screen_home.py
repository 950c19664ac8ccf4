"""Home: removable media and the bundles on them, a trust summary, the latest audit events."""

from __future__ import annotations

from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.content import Content
from textual.widgets import DataTable, Static

from appliance.mediascan import Medium
from bundles.errors import ApplianceError
from tui import fmt
from tui.base import ApplianceScreen, cell, footer, header
from tui.messages import HomeData, MediaScanned
from tui.model import Problem, audit_log, event_subject, trust_summary
from tui.widget_alarms import AlarmsPanel

LATEST_EVENTS = 6

# What to do about a home behind its witness (the witness status is the core's).
BEHIND_ADVICE = (
    "This home is OLDER than its witness: it was restored from a backup or rolled back. "
    "Imports of stale bundles, loads and rollbacks are refused. To recover, import the "
    "newest signed bundle or trust update, or run 'appliance witness reset' (audited) "
    "if the restore was intended."
)
STATUS_TONE = {"new": "ok", "imported": "muted", "older": "bad", "expired": "bad"}


def _shown(media: list[Medium]) -> list[tuple[object, ...]]:
    """What the bundle table shows of the media (a poll's objects are new every time)."""
    return [
        (
            m.path,
            m.documents,
            None if m.error is None else (m.error.code, m.error.message),
            *(
                (b.path, b.format, b.stream, b.sequence, b.artifacts, b.total_size, b.not_read)
                + (() if b.error is None else (b.error.code, b.error.message))
                for b in m.bundles
            ),
        )
        for m in media
    ]


class HomeScreen(ApplianceScreen):
    BINDINGS = [
        Binding("enter", "review", "Review", id="home.review", priority=True),
        Binding("r", "rescan", "Rescan", id="home.rescan"),
        Binding("i", "app.inventory", "Inventory", id="home.inventory"),
        Binding("a", "app.audit", "Audit", id="home.audit"),
        Binding("k", "app.keys", "Keys", id="home.keys"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.media: list[Medium] = []
        self.statuses: dict[str, str] = {}
        self._bundle_paths: list[Path] = []

    def compose(self) -> ComposeResult:
        yield header()
        yield AlarmsPanel()  # unacknowledged alarms first (hidden when there are none)
        yield Static(id="trust-summary")
        yield Static("Media and bundles (unverified until reviewed)", classes="section-title")
        yield DataTable(id="bundles", cursor_type="row", zebra_stripes=True)
        yield Static(id="no-media", classes="muted")
        yield Static("Latest audit events", classes="section-title")
        yield DataTable(id="events", cursor_type="none", show_cursor=False)
        yield footer()

    def on_mount(self) -> None:
        self.title = "appliance"
        self.sub_title = str(self.app_.home.root)
        table = self.query_one("#bundles", DataTable)
        table.add_columns("Bundle", "Status", "Stream", "Seq", "Art.", "Size", "Media")
        events = self.query_one("#events", DataTable)
        events.add_columns("#", "Time (UTC)", "Event", "Outcome", "Subject")
        self.show_media()
        self.refresh_data()
        self.set_interval(self.app_.poll_interval, self.scan_media)

    def on_screen_resume(self) -> None:
        self.refresh_data()

    # --- media polling (worker thread; the UI hears about it by message) ---------

    @work(thread=True, group="media")
    def scan_media(self) -> None:
        """One scan at a time (a poll asked for while one runs is run by that one's thread,
        after it: never a second thread), in the app's scanner process, whose caches
        survive polls: an unchanged stick costs a directory listing, no manifest parse and
        no policy evaluation (the statuses are the core's)."""
        scanner = self.app_.scanner
        if not scanner.claim():
            return
        again = True
        while again:
            poll = self.app_.scan_media()
            if poll.problem is not None and not poll.media:  # the scanner itself failed
                message = f"Media scan failed: {poll.problem.message}"
                self.app.call_from_thread(self.notify, message, severity="error")
            self.post_message(MediaScanned(poll.media, poll.statuses))
            again = scanner.more()

    def on_media_scanned(self, message: MediaScanned) -> None:
        if _shown(message.media) != _shown(self.media) or message.statuses != self.statuses:
            self.media = message.media
            self.statuses = message.statuses
            self.app_.media = message.media
            self.show_media()

    def action_rescan(self) -> None:
        self.scan_media()
        self.notify(f"Looking for media{fmt.glyphs().ellipsis}", timeout=2)

    def show_media(self) -> None:
        table = self.query_one("#bundles", DataTable)
        keep = table.cursor_row
        table.clear()
        self._bundle_paths = []
        tone = self.app_.tone
        for medium in self.media:
            where = fmt.tail(str(medium.path), 24)
            for b in medium.bundles:
                self._bundle_paths.append(Path(b.path))
                name = cell(b.name + ("" if b.format == "dir" else " (tar)"))
                if b.error is not None or b.not_read is not None:
                    status = f"unreadable: {b.error.code}" if b.error else "not read"
                    table.add_row(
                        name, tone(status, "bad"), "", "", "", "", cell(where), key=b.path
                    )
                    continue
                status = self.statuses.get(b.path, "?")
                table.add_row(
                    name,
                    tone(status, STATUS_TONE.get(status, "bad")),
                    cell(b.stream or ""),
                    str(b.sequence),
                    str(b.artifacts),
                    fmt.size(b.total_size or 0),
                    cell(where),
                    key=b.path,
                )
        note = self.query_one("#no-media", Static)
        if not self.media:
            note.update("No media found. Plug in removable media, or start with --media DIR.")
        elif not self._bundle_paths:
            note.update(Content("No bundles on: " + ", ".join(str(m.path) for m in self.media)))
        else:
            note.update("")
        note.display = not self._bundle_paths
        if self._bundle_paths:
            table.move_cursor(row=min(keep, len(self._bundle_paths) - 1))

    # --- trust summary and events --------------------------------------------------

    def refresh_data(self) -> None:
        self._read_home()
        self.scan_media()  # statuses change with the store (an import, a rollback)

    @work(thread=True, exclusive=True, group="home-data")
    def _read_home(self) -> None:
        """The audit chain walk and the store reads run here, never on the UI thread."""
        try:
            t = trust_summary(self.app_.home, self.app_.witness)
            log = audit_log(self.app_.home, last=LATEST_EVENTS)
        except ApplianceError as e:
            self.post_message(HomeData(None, None, Problem.of(e)))
            return
        self.post_message(HomeData(t, log, None))

    def on_home_data(self, message: HomeData) -> None:
        summary = self.query_one("#trust-summary", Static)
        events = self.query_one("#events", DataTable)
        events.clear()
        if message.problem is not None:
            e = message.problem
            summary.update(
                Content.styled(f"Cannot read the home: [{e.code}] {e.message}", "$text-error")
            )
            return
        t, log = message.summary, message.log
        streams = ", ".join(f"{s} #{n}" for s, n in sorted(t.streams.items())) or "none yet"
        chain = (
            Content.styled(f"BROKEN: {t.audit_problem.message}", "bold $text-error")
            if t.audit_problem
            else Content.styled(f"{t.audit_events} events, chain intact", "$text-success")
        )
        witness = Content.styled(
            t.witness_status,
            "bold $text-error" if t.witness_status in ("home_behind", "missing") else "",
        )
        revoked = f", {t.revoked_keys} revoked" if t.revoked_keys else ""
        summary.update(
            Content.assemble(
                ("Trust ", "bold"),
                f"v{t.version} {fmt.glyphs().dot} site {t.site or '-'} {fmt.glyphs().dot} "
                f"{t.active_keys} keys{revoked} {fmt.glyphs().dot} "
                f"{t.artifacts} artifacts {fmt.glyphs().dot} witness ",
                witness,
                "\n",
                ("Streams ", "bold"),
                f"{streams} {fmt.glyphs().dot} ",
                ("Audit ", "bold"),
                chain,
                *(
                    ("\n", Content.styled(BEHIND_ADVICE, "$text-error"))
                    if t.witness_status == "home_behind"
                    else ()
                ),
            )
        )
        tone = self.app_.tone
        for ev in reversed(log.events):
            outcome = ev["outcome"]
            events.add_row(
                str(ev["seq"]),
                str(ev["ts"]).replace("T", " ").rstrip("Z"),
                cell(ev["type"]),
                tone(outcome, "ok" if outcome == "accepted" else "bad"),
                cell(event_subject(ev) + (f" [{ev['code']}]" if ev.get("code") else "")),
            )

    # --- actions -------------------------------------------------------------------

    @on(DataTable.RowSelected, "#bundles")
    def _selected(self) -> None:
        self.action_review()

    def action_review(self) -> None:
        if not self._bundle_paths:
            self.notify("No bundle to review", severity="warning")
            return
        from tui.screen_review import ReviewScreen

        row = self.query_one("#bundles", DataTable).cursor_row
        path = self._bundle_paths[max(0, min(row, len(self._bundle_paths) - 1))]
        self.app.push_screen(ReviewScreen(path))
