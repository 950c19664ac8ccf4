"""Tiny artifacts staged by the importing process and a forked helper at once.

``helper_batches.HelperBatches`` shares them out (see there for how, and when no helper
runs). The helper stages with the importer's own ``stage`` function into the same
staging folder (by the inherited descriptor) and reports each staging file's name and
inode (``Staged``); an artifact it failed on is staged again here, so the error raised, its code and
its audit event are the importer's. ``store.Promotion`` then checks each staged file as
it does any other: the name must still hold that inode. The helper's staging files
after a failure are removed with the rest (``home.clean_staging``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from appliance.errors import CancelledError
from appliance.store import Staged
from bundles.helper_batches import NOT_USABLE, HelperBatches
from bundles.manifest import Artifact

__all__ = ["tiny_stager"]


def _cancelled() -> CancelledError:
    return CancelledError("import cancelled; nothing was changed")


def _encode(staged: Staged | None) -> object:
    if staged is None:
        return []
    return [staged.name, staged.dev, staged.ino, staged.size, staged.ctime_ns, staged.generation]


def tiny_stager(
    artifacts: Sequence[Artifact],
    expects: Sequence[bool],
    stage: Callable[[Artifact, bool], Staged | None],
    stop: threading.Event,
    report: Callable[[Artifact], None] | None = None,
) -> HelperBatches[Artifact, Staged | None]:
    """Stage ``artifacts`` with ``stage(artifact, report_progress)``; ``expects[i]``:
    whether artifact ``i`` is written to staging (a new one), not only hashed."""

    def decode(entry: object, i: int) -> object:
        if entry == [] and not expects[i]:
            return None
        if not (expects[i] and isinstance(entry, list) and len(entry) == 6):
            return NOT_USABLE
        name, dev, ino, size, ctime_ns, generation = entry
        if not (isinstance(name, str) and name and "/" not in name and name[0] != "."):
            return NOT_USABLE
        if not all(type(v) is int for v in (dev, ino, size, ctime_ns)):
            return NOT_USABLE
        if generation is not None and type(generation) is not int:
            return NOT_USABLE
        return Staged(name, dev, ino, size, ctime_ns, generation)

    return HelperBatches(artifacts, stage, _encode, decode, stop, _cancelled, report)
