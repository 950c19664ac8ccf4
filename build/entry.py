"""Frozen entry point of the one-file binary (PyInstaller runs this, not ``python -m``).

``multiprocessing.freeze_support()`` must run before anything else: in a frozen
binary a worker process of ``concurrent.futures.ProcessPoolExecutor`` started
with the ``spawn`` or ``forkserver`` method is this same executable, and
``freeze_support`` turns it into the worker instead of a second CLI run.

``APPLIANCE_SELFTEST=1`` runs the frozen self-test (build/appliance_selftest.py)
instead of the CLI; the smoke test uses it to check inside an empty chroot that
the native modules, sqlite, process pools and textual's stylesheets are bundled.
``APPLIANCE_SELFTEST=tui`` shows a small textual app on the terminal (ctrl+q quits).
"""

import multiprocessing
import os
import sys

if __name__ == "__main__":
    multiprocessing.freeze_support()
    if os.environ.get("APPLIANCE_SELFTEST") in ("1", "tui"):
        from appliance_selftest import selftest

        sys.exit(selftest(os.environ["APPLIANCE_SELFTEST"]))
    from appliance.launch import entry

    sys.exit(entry())
