"""Group commit of the service's audit events: many loads, one transaction, none lost.

Workers ``submit`` an event and get a ``Future`` of its sequence number; one
writer thread takes every event queued so far, appends them all in one
``BEGIN IMMEDIATE`` ... ``COMMIT`` (one set of fsyncs for the batch), brings
the witness forward once, then resolves the futures. The service sends a
descriptor from the future's callback (in this thread, right after the
commit), so only after its event is committed and witnessed; a witness that
cannot be brought forward fails each future with ``Unwitnessed`` (the events
stand, committed). ``stop`` drains the queue
first, and waits for every ``hold`` (a reply still being sent, which may yet
record that it never reached its loader).

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

from appliance import audit, witness
from appliance.db import Database, sqlite_errors, transaction
from appliance.service.cache import ChangeCounter
from bundles.errors import ApplianceError

MAX_BATCH = 512


class Unwitnessed(Exception):
    """The batch's events are committed (``seq``), but the witness could not be brought
    forward after them (``cause``): nothing may be handed over for them, and the log
    should say so (``load_undelivered``)."""

    def __init__(self, cause: ApplianceError, seq: int) -> None:
        super().__init__(cause.message)
        self.cause = cause
        self.seq = seq


class Journal:
    def __init__(self, db: Database, counter: ChangeCounter, witness_path: Path | None) -> None:
        self.db = db
        self.counter = counter
        self.witness_path = witness_path
        self._queue: queue.Queue[tuple[str, dict[str, Any], Future[int]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="audit-journal", daemon=True)
        self.batches = 0
        self._holds = 0
        self._holds_lock = threading.Lock()
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
        """Commit everything queued, also what is queued while a ``hold`` lasts, then stop."""
        self._queue.put(None)
        self._thread.join()

    def hold(self) -> None:
        """Someone (a reply still being sent) may yet ``submit``: ``stop`` waits for it."""
        with self._holds_lock:
            self._holds += 1

    def release(self) -> None:
        """The end of a ``hold`` (after that holder's last ``submit``)."""
        with self._holds_lock:
            self._holds -= 1

    def _held(self) -> tuple[str, dict[str, Any], Future[int]] | None:
        """Once stopping: the next queued event, or None when nothing is queued and no hold
        is left (a holder submits before it releases, so its events are queued by then)."""
        while True:
            try:
                item = self._queue.get(timeout=0.05)
            except queue.Empty:
                with self._holds_lock:
                    idle = self._holds == 0
                if not idle:
                    continue
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    return None
            if item is not None:
                return item

    def _run(self) -> None:
        stopping = False
        while True:
            if stopping:
                item = self._held()
                if item is None:
                    return
            else:
                item = self._queue.get()
                if item is None:
                    stopping = True
                    continue
            batch = [item]
            while len(batch) < MAX_BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stopping = True
                    continue
                batch.append(nxt)
            self._commit(batch)

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
                    self.counter.expect(before + 1)  # a reader seeing it waits for own/abandon
            if before >= 0:
                self.counter.own(before + 1)
            self.batches += 1
        except BaseException as e:  # every waiter learns the batch failed; none is served
            self.counter.abandon()
            for _, _, fut in batch:
                fut.set_exception(e)
            if not isinstance(e, Exception):
                raise
            return
        unwitnessed: ApplianceError | None = None
        if refresh:
            try:
                with sqlite_errors():
                    witness.refresh(self.db, self.witness_path)
            except ApplianceError as e:  # committed, not witnessed: said to each waiter
                unwitnessed = e
            # A bug: each waiter fails with it, and the journal goes on.
            except Exception as e:  # noqa: BLE001
                for _, _, fut in batch:
                    fut.set_exception(e)
                return
        for (_, _, fut), seq in zip(batch, seqs, strict=True):
            if unwitnessed is None:
                fut.set_result(seq)
            else:
                fut.set_exception(Unwitnessed(unwitnessed, seq))
