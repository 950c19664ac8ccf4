"""Session-wide test environment.

Trust anchors (the root keys, site and witness location of each home, kept
outside the home) go to a per-session folder, never to ``/etc/appliance`` or
the tester's own config folder. The variable is set at import time so that
every subprocess the tests start inherits it.
"""

from __future__ import annotations

import os
import tempfile

_ANCHORS = tempfile.mkdtemp(prefix="appliance-test-anchors-")
os.chmod(_ANCHORS, 0o755)  # a service user (tests/service) reads its anchor
os.environ["APPLIANCE_ANCHOR_DIR"] = _ANCHORS
# Tests tamper with store objects as an attacker would: no immutable flag unless a test
# of the fast path turns it on (tests/perf/test_immutable.py), see docs/LOADING.md.
os.environ["APPLIANCE_IMMUTABLE"] = "0"
