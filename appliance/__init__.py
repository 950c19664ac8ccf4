"""The air-gapped core of the offline verification appliance.

Public API (loaded on first use so that ``import appliance`` stays cheap for
the CLI's start-up): ``Home`` and ``init_home`` (a home at trust version 1);
``import_bundle`` (verify and import all or nothing; ``ImportResult``);
``load`` (verify on every load; returns a ``LoadedArtifact`` holding the open
descriptor that was hashed); ``verify_record`` (re-hash and re-check one
stored record); ``apply_rollback`` and ``authorize_rollback`` (single-use,
role-signed pointer moves); ``artifact_history`` (what happened to an
artifact, in order); ``scan_media`` (removable media and their bundles);
``ExitCode`` and ``exit_code_for`` (the CLI contract's exit codes).
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # typing is not imported by ``import appliance`` (mypy reads the name)
if TYPE_CHECKING:
    from typing import Any

    from appliance.errors import ExitCode, exit_code_for
    from appliance.history import artifact_history
    from appliance.home import Home
    from appliance.importer import ImportResult, import_bundle
    from appliance.initialize import init_home
    from appliance.loader import LoadedArtifact, load
    from appliance.mediascan import scan as scan_media
    from appliance.rollback import apply_rollback, authorize_rollback
    from appliance.verify import verify_record

_LAZY = {
    "ExitCode": "appliance.errors",
    "exit_code_for": "appliance.errors",
    "Home": "appliance.home",
    "ImportResult": "appliance.importer",
    "import_bundle": "appliance.importer",
    "init_home": "appliance.initialize",
    "scan_media": "appliance.mediascan:scan",
    "verify_record": "appliance.verify",
    "load": "appliance.loader",
    "LoadedArtifact": "appliance.loader",
    "apply_rollback": "appliance.rollback",
    "authorize_rollback": "appliance.rollback",
    "artifact_history": "appliance.history",
}

__all__ = [
    "ExitCode",
    "Home",
    "ImportResult",
    "LoadedArtifact",
    "apply_rollback",
    "artifact_history",
    "authorize_rollback",
    "exit_code_for",
    "import_bundle",
    "init_home",
    "load",
    "scan_media",
    "verify_record",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'appliance' has no attribute {name!r}")
    module, _, attr = module.partition(":")
    value = getattr(importlib.import_module(module), attr or name)
    globals()[name] = value
    return value
