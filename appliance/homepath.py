"""Where the home is by default, and its database's name, with nothing else imported.

``appliance.home`` builds on these; the CLI's head start on a load
(``appliance.launch``) reads them before the rest of the product is imported.
"""

from __future__ import annotations

import os

DB_FILE = "appliance.db"


def default_home_path() -> str:
    """``$APPLIANCE_HOME``, else ``/var/lib/appliance`` for root, else a per-user folder."""
    env = os.environ.get("APPLIANCE_HOME")
    if env:
        return env
    if os.geteuid() == 0:
        return "/var/lib/appliance"
    return os.path.join(os.path.expanduser("~"), ".local", "share", "appliance")
