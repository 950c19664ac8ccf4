"""Session-wide test environment.

Trust anchors (the root keys, site and witness location of each home, kept
outside the home) go to a per-session folder, never to ``/etc/appliance`` or
the tester's own config folder. The variable is set at import time so that
every subprocess the tests start inherits it.
"""

from __future__ import annotations

import os
import tempfile

import pytest

_ANCHORS = tempfile.mkdtemp(prefix="appliance-test-anchors-")
os.chmod(_ANCHORS, 0o755)  # a service user (tests/service) reads its anchor
os.environ["APPLIANCE_ANCHOR_DIR"] = _ANCHORS
# Tests tamper with store objects as an attacker would: no immutable flag unless a test
# of the fast path turns it on (tests/perf/test_immutable.py), see docs/LOADING.md.
os.environ["APPLIANCE_IMMUTABLE"] = "0"


@pytest.fixture
def helper_counters(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """``bundles.helper_batches.counters`` from zero for this test, and a helper allowed
    to fork: pytest-timeout's idle watchdog thread makes ``fork_is_safe`` say no, and it
    holds no lock the helper needs (tests/perf/test_complexity.py does the same for
    verify)."""
    import bundles.helper_batches as helper_batches

    fresh = dict.fromkeys(helper_batches.counters, 0)
    monkeypatch.setattr(helper_batches, "counters", fresh)
    monkeypatch.setattr(helper_batches, "fork_is_safe", lambda: True)
    return fresh
