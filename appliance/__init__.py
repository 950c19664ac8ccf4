"""The air-gapped core of the offline verification appliance.

Public API (loaded on first use so that ``import appliance`` stays cheap for
the CLI's start-up): ``load`` (verify on every load; returns a
``LoadedArtifact`` holding the open descriptor that was hashed),
``apply_rollback`` and ``authorize_rollback`` (single-use, role-signed pointer
moves), ``artifact_history`` (what happened to an artifact, in order).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from appliance.history import artifact_history
    from appliance.loader import LoadedArtifact, load
    from appliance.rollback import apply_rollback, authorize_rollback

_LAZY = {
    "load": "appliance.loader",
    "LoadedArtifact": "appliance.loader",
    "apply_rollback": "appliance.rollback",
    "authorize_rollback": "appliance.rollback",
    "artifact_history": "appliance.history",
}

__all__ = ["LoadedArtifact", "apply_rollback", "artifact_history", "authorize_rollback", "load"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'appliance' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
