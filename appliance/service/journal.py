"""Group commit of the service's audit events: many loads, one transaction, none lost.

Workers ``submit`` an event and wait for its sequence number; one writer
thread takes every event queued so far, appends them all in one ``BEGIN
IMMEDIATE`` ... ``COMMIT`` (one set of fsyncs for the batch), brings the
witness forward once, then wakes the workers. A worker hands a descriptor
over only after its event is committed. ``stop`` drains the queue first.

The journal writes on its own connection, so that its fsyncs never hold up
the workers' reads; it tells the ``ChangeCounter`` which header counter
values its commits produced (read inside the write transaction, when no
other connection can commit), so that the evidence cache does not take the
service's own load events for someone else's change.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import sqlite_utils

from appliance import audit, witness
from appliance.db import transaction
from appliance.service.cache import ChangeCounter

MAX_BATCH = 512


class Journal:
    def __init__(
        self, db: sqlite_utils.Database, counter: ChangeCounter, witness_path: Path | None
    ) -> None:
        self.db = db
        self.counter = counter
        self.witness_path = witness_path
        self._queue: queue.Queue[tuple[str, dict[str, Any], Future[int]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="audit-journal", daemon=True)
        self.batches = 0
        self._thread.start()

    def submit(self, type: str, fields: dict[str, Any], *, refresh: bool = True) -> Future[int]:
        """Queue one event. ``refresh=False`` (a refusal for suspect state): a batch holding
        one does not bring the witness forward (a home ahead of its witness is fine, one
        wrongly re-witnessed is not).
        """
        fut: Future[int] = Future()
        self._queue.put((type, {**fields, "_refresh": refresh}, fut))
        return fut

    def record(self, type: str, fields: dict[str, Any], *, refresh: bool = True) -> int:
        """Append one event and wait until it is committed; returns its ``seq``."""
        return self.submit(type, fields, refresh=refresh).result()

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            stop = False
            while len(batch) < MAX_BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[tuple[str, dict[str, Any], Future[int]]]) -> None:
        try:
            refresh = True
            events = []
            for type, fields, _ in batch:
                args = dict(fields)
                refresh = bool(args.pop("_refresh")) and refresh
                events.append((type, args))
            with transaction(self.db):
                # Read before our first write: we hold the write lock (BEGIN IMMEDIATE), so
                # no one else can commit now, and our commit makes it exactly before + 1.
                before = self.counter.read()
                seqs = [int(e["seq"]) for e in audit.append_many(self.db, events)]
            if before >= 0:
                self.counter.own(before + 1)
            if refresh:
                witness.refresh(self.db, self.witness_path)
            self.batches += 1
        except BaseException as e:  # every waiter learns the batch failed; none is served
            for _, _, fut in batch:
                fut.set_exception(e)
            if not isinstance(e, Exception):
                raise
            return
        for (_, _, fut), seq in zip(batch, seqs, strict=True):
            fut.set_result(seq)
