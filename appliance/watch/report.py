"""Where an alarm goes besides the audit log: stderr, JSON lines, the system log."""

from __future__ import annotations

import json
import os
import sys
import syslog
from collections.abc import Callable
from typing import TextIO

from appliance.watch.alarms import Alarm

Sink = Callable[[Alarm], None]

DEV_LOG = "/dev/log"


def stderr_sink(stream: TextIO | None = None) -> Sink:
    def sink(alarm: Alarm) -> None:
        out = stream or sys.stderr
        if out is not None:  # (None: stderr closed; ``print`` would write it to stdout)
            print(alarm.line(), file=out, flush=True)

    return sink


def json_sink(stream: TextIO | None = None) -> Sink:
    """One JSON object per line: ``{"alarm": CODE, "subject": ..., "at": ..., ...}``."""

    def sink(alarm: Alarm) -> None:
        out = stream or sys.stdout
        out.write(json.dumps(alarm.to_dict(), sort_keys=True, ensure_ascii=False) + "\n")
        out.flush()

    return sink


def syslog_sink() -> Sink | None:
    """Alarms to the journal or syslog (alert, facility auth) when ``/dev/log`` is there."""
    if not os.path.exists(DEV_LOG):
        return None
    syslog.openlog("appliance-watch", syslog.LOG_PID, syslog.LOG_AUTH)

    def sink(alarm: Alarm) -> None:
        syslog.syslog(syslog.LOG_ALERT, alarm.line())

    return sink
