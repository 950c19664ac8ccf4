"""``appliance init``: a new home at trust version 1 with the given root keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from appliance import audit, witness
from appliance.anchor import Anchor, anchor_path, home_key, new_home_id, write_anchor
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
    anchor: Path | None = None,
) -> dict[str, Any]:
    """Make a home at trust version 1 and write its trust anchor outside it.

    The anchor (``appliance.anchor``) holds the root keys, the site and the
    witness's location; it is written before the home's database is linked into
    place, and replaced only when no home exists at this place any more.
    """
    if home.exists():
        raise AlreadyInitializedError(f"{home.root} is already an appliance home")
    state = TrustState.initial(root_keys, threshold)
    if witness_path is not None:
        witness_path = witness_path.resolve()
    home.make_layout()
    tmp = home.new_db_path()
    created = format_time(utcnow())
    record = Anchor(
        path=anchor_path(home.root, anchor),
        home=home_key(home.root),
        home_id=new_home_id(),
        root_keys=tuple(root_keys),
        root_threshold=threshold,
        site=site,
        witness=witness_path,
        created_at=created,
    )
    db = connect(tmp, create=True)
    with transaction(db):
        set_meta(db, "schema", str(SCHEMA_VERSION))
        set_meta(db, "created_at", created)
        set_meta(db, "home_id", record.home_id)
        if site:
            set_meta(db, "site", site)
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
    write_anchor(record, replace=True)
    home.publish_db(tmp)
    db = home.db()
    try:
        if witness_path is not None:
            witness.write(db, witness_path)
    finally:
        db.conn.close()
    return {
        "home": str(home.root),
        "site": site,
        "trust_version": 1,
        "root_keys": sorted(state.keys),
        "root_threshold": threshold,
        "witness": str(witness_path) if witness_path else None,
        "anchor": str(record.path),
    }
