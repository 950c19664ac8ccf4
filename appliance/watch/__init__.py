"""Watching the store: alarms within two seconds, background scrub, acknowledgements.

``Watcher(home, witness_path).run(stop)`` watches until ``stop`` is set (one
line to start it in a thread inside ``appliance serve``); ``check_once()``
checks everything once. Alarms are audit events (``alarms``, ``acknowledge``).
See docs/WATCH.md.
"""

from __future__ import annotations

from appliance.watch.alarms import (
    ADVICE,
    ALARM_ERRORS,
    Alarm,
    RecordedAlarm,
    acknowledge,
    alarms,
    unacknowledged,
)
from appliance.watch.report import json_sink, stderr_sink, syslog_sink
from appliance.watch.scrub import ScrubProgress, last_verified, parse_rate
from appliance.watch.watcher import Watcher

__all__ = [
    "ADVICE",
    "ALARM_ERRORS",
    "Alarm",
    "RecordedAlarm",
    "ScrubProgress",
    "Watcher",
    "acknowledge",
    "alarms",
    "json_sink",
    "last_verified",
    "parse_rate",
    "stderr_sink",
    "syslog_sink",
    "unacknowledged",
]
