"""``appliance init``: a new home at trust version 1 with the given root keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from appliance import audit, witness
from appliance.db import SCHEMA_VERSION, connect, set_meta, transaction
from appliance.errors import AlreadyInitializedError
from appliance.home import Home
from appliance.trust import TrustState
from appliance.truststore import save_trust
from bundles.keys import PublicKey
from bundles.timeutil import format_time, utcnow


def init_home(
    home: Home,
    root_keys: list[PublicKey],
    threshold: int = 1,
    site: str | None = None,
    witness_path: Path | None = None,
) -> dict[str, Any]:
    if home.exists():
        raise AlreadyInitializedError(f"{home.root} is already an appliance home")
    state = TrustState.initial(root_keys, threshold)
    home.make_layout()
    tmp = home.new_db_path()
    db = connect(tmp, create=True)
    with transaction(db):
        set_meta(db, "schema", str(SCHEMA_VERSION))
        set_meta(db, "created_at", format_time(utcnow()))
        if site:
            set_meta(db, "site", site)
        if witness_path is not None:
            set_meta(db, "witness_path", str(witness_path.resolve()))
        save_trust(db, state)
        audit.append(
            db,
            "init",
            outcome="accepted",
            detail={
                "site": site,
                "root_keys": sorted(state.keys),
                "root_threshold": threshold,
                "witness": str(witness_path) if witness_path else None,
            },
        )
    db.conn.close()
    home.publish_db(tmp)
    db = home.db()
    if witness_path is not None:
        witness.write(db, witness_path.resolve())
    return {
        "home": str(home.root),
        "site": site,
        "trust_version": 1,
        "root_keys": sorted(state.keys),
        "root_threshold": threshold,
        "witness": str(witness_path) if witness_path else None,
    }
