"""Keys and roles: the trust version, each role's threshold, every key and revocation."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.content import Content
from textual.widgets import DataTable, Static

from appliance.trust import key_text
from bundles.errors import ApplianceError
from tui import fmt
from tui.base import SubScreen, cell, footer, header
from tui.model import trust_summary


class KeysScreen(SubScreen):
    BINDINGS = [Binding("escape", "back", "Back", id="back")]

    def compose(self) -> ComposeResult:
        yield header()
        yield Static(id="trust-info")
        yield Static("Roles", classes="section-title")
        yield DataTable(id="roles", cursor_type="none", show_cursor=False)
        yield Static("Keys", classes="section-title")
        yield DataTable(id="keys", cursor_type="row", zebra_stripes=True)
        yield Static("Loader grants", classes="section-title")
        yield Static(id="no-grants", classes="muted")
        yield DataTable(id="grants", cursor_type="none", show_cursor=False)
        yield footer()

    def on_mount(self) -> None:
        self.title = "Keys and roles"
        self.query_one("#roles", DataTable).add_columns("Role", "Threshold", "Keys", "Status")
        self.query_one("#keys", DataTable).add_columns("Key id", "Role", "Added", "Status")
        self.query_one("#grants", DataTable).add_columns(
            "Loader", "Stream", "Artifacts", "Versions", "Granted"
        )
        self.refresh_data()

    def refresh_data(self) -> None:
        info = self.query_one("#trust-info", Static)
        try:
            t = trust_summary(self.app_.home, self.app_.witness)
        except ApplianceError as e:
            info.update(Content.styled(f"[{e.code}] {e.message}", "bold $text-error"))
            return
        info.update(
            Content.assemble(
                ("Trust version ", "bold"),
                f"{t.version} {fmt.glyphs().dot} site {t.site or '-'} {fmt.glyphs().dot} "
                f"trusted time {fmt.when(t.trusted_time)}\n",
                ("Witness ", "bold"),
                f"{t.witness_status}: {t.witness_detail}",
            )
        )
        tone = self.app_.tone
        roles = self.query_one("#roles", DataTable)
        roles.clear()
        for r in t.roles:
            roles.add_row(
                cell(r.role),
                f"{r.threshold} of {r.members}",
                str(r.members),
                tone("usable", "ok") if r.usable else tone("BELOW THRESHOLD", "bad"),
            )
        keys = self.query_one("#keys", DataTable)
        keys.clear()
        for k in t.keys:
            added = f"v{k.added_version}" if k.added_version is not None else "-"
            status = (
                tone(f"revoked in v{k.revoked_version}", "bad")
                if k.revoked_version is not None
                else tone("active", "ok")
            )
            keys.add_row(cell(key_text(k.keyid, k.label)), cell(k.role), added, status)
        grants = self.query_one("#grants", DataTable)
        grants.clear()
        for g in t.grants:
            grants.add_row(
                cell(g.principal),
                cell(g.stream),
                cell(", ".join(g.artifacts) or "every artifact"),
                "any stored" if g.any_version else "active only",
                f"v{g.version}",
            )
        grants.display = bool(t.grants)
        none = self.query_one("#no-grants", Static)
        none.display = not t.grants
        none.update("none: the loader service refuses every loader")
