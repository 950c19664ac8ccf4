"""Import a bundle from media: authenticate, decide, stage, promote all or nothing.

media -> trust updates carried by the bundle (each verified and applied on its
own merit) -> authenticate the manifest against today's keys -> policy ->
one pass per artifact into staging (tiny ones in the importing thread, larger
ones several at once) -> promote every object (``store.Promotion``: each folder
opened once) -> one transaction for records, active versions, high-water marks, trusted
time and audit events (repairs included) -> the repaired objects renamed over
the damaged ones. A crash before that transaction leaves the old state
(unreferenced objects at most); after it, the new one (with, at worst, a
recorded repair whose object is still the damaged one: loads refuse it and the
next import repairs it).
"""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance import audit, repair, witness
from appliance.db import Database, transaction
from appliance.errors import CancelledError, IOFailedError
from appliance.evaluation import (
    bundle_identity,
    carried_updates,
    evaluate_source,
    require_identity,
)
from appliance.home import STAGING_DIR, Home, HomeLock
from appliance.modelsig import ModelCheck, check_bundle_models
from appliance.policy import Decision
from appliance.staging import SMALL, Progress, stage_artifact
from appliance.store import Promotion, Staged, promote, sweep_orphans, sync_home
from appliance.tiny_staging import tiny_stager
from appliance.trust import KeyLabel, TrustState, apply_update
from appliance.truststore import (
    load_trust,
    save_trust,
)
from bundles.documents import ResetStream, TrustUpdate
from bundles.dsse import Envelope, verify_envelope
from bundles.errors import (
    ApplianceError,
    PayloadTypeError,
    RejectedError,
    SignatureError,
    UnknownKeyError,
    UnsignedError,
)
from bundles.manifest import PAYLOAD_TYPE, Artifact, Manifest
from bundles.media import MediaSource
from bundles.reader import Bundle, open_bundle_media, peek
from bundles.timeutil import format_time, utcnow

PARALLEL_ARTIFACTS = 2  # big artifacts at once (each already keeps two cores busy)
PARALLEL_SMALL = 4  # small ones at once: their time is mostly system calls
INLINE = 64 << 10  # at most this size (one part): staged in the importing thread
REFUSAL_NAMES = 1000  # artifact names a refused import's audit event keeps (docs/AUDIT.md)
# Refusals of the signature check itself: the manifest they name is not authenticated.
_UNAUTHENTICATED = (PayloadTypeError, UnsignedError, UnknownKeyError, SignatureError)


@dataclass
class ImportResult:
    path: str
    stream: str
    sequence: int
    dry_run: bool
    signers: list[str]
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    trust_updates: list[int] = field(default_factory=list)
    bytes_verified: int = 0
    warnings: list[str] = field(default_factory=list)  # after the commit (docs/CLI.md)
    model_signatures: list[dict[str, Any]] = field(default_factory=list)
    labels: list[KeyLabel] = field(default_factory=list)  # signers with root-signed labels
    identity: str = ""  # evaluation.bundle_identity: what --expect-identity pins

    def to_dict(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"warnings": self.warnings} if self.warnings else {}
        return {
            **extra,
            "path": self.path,
            "stream": self.stream,
            "sequence": self.sequence,
            "dry_run": self.dry_run,
            "signers": self.signers,
            "labels": self.labels,
            "artifacts": self.artifacts,
            "trust_updates_applied": self.trust_updates,
            "bytes_verified": self.bytes_verified,
            "model_signatures": self.model_signatures,
            "bundle_identity": self.identity,
        }


def apply_trust_envelope(db: Database, state: TrustState, env: Envelope, source: str) -> TrustState:
    """Verify one trust update against ``state`` and commit it; refusals are audited."""
    try:
        new, update = apply_update(state, env)
    except RejectedError as e:
        record_refusal(db, "trust_update", e, {"source": source})
        raise
    commit_trust_update(db, new, update, env, source)
    return new


def commit_trust_update(
    db: Database, new: TrustState, update: TrustUpdate, env: Envelope, source: str
) -> None:
    with transaction(db):
        save_trust(db, new)
        db.execute(
            "INSERT INTO trust_documents (version, envelope, applied_at) VALUES (?, ?, ?)",
            [new.version, env.to_bytes(), format_time(utcnow())],
        )
        for op in update.operations:
            if isinstance(op, ResetStream):  # root-signed fast-forward recovery
                db.execute(
                    "INSERT INTO streams (stream, sequence, updated_at) VALUES (?, ?, ?)"
                    " ON CONFLICT(stream) DO UPDATE SET sequence = excluded.sequence,"
                    " updated_at = excluded.updated_at",
                    [op.stream, op.sequence, format_time(utcnow())],
                )
        audit.append(
            db,
            "trust_update",
            outcome="accepted",
            version=str(new.version),
            detail={"source": source, "operations": [op.to_dict() for op in update.operations]},
        )


def record_refusal(
    db: Database,
    type: str,
    error: RejectedError,
    detail: dict[str, Any],
    *,
    name: str | None = None,
    version: str | None = None,
) -> None:
    """A refusal changes no state, but it is an event: record it in the audit log."""
    with transaction(db):
        audit.append(
            db,
            type,
            outcome="rejected",
            code=error.code,
            name=name,
            version=version,
            detail={**detail, "message": error.message},
        )


def manifest_claims(manifest: Manifest, authenticated: bool) -> dict[str, Any]:
    """What a refused import's manifest named, for its audit event (issue 14).

    ``artifacts`` lists ``{name, version}`` of at most ``REFUSAL_NAMES`` artifacts (in
    manifest order; ``artifact_count`` says how many it listed); ``authenticated`` is
    false when its signature check had not passed (the names are then only a claim).
    """
    listed = manifest.artifacts
    return {
        "artifacts": [{"name": a.name, "version": a.version} for a in listed[:REFUSAL_NAMES]],
        "artifact_count": len(listed),
        "authenticated": authenticated,
        "stream": manifest.stream,
        "sequence": manifest.sequence,
    }


def _refused_claims(source: MediaSource, state: TrustState, error: RejectedError) -> dict[str, Any]:
    """``manifest_claims`` of a bundle whose decision refused it; ``{}`` when its manifest
    does not parse. Authenticated only if the refusal came after the signature check and
    the signatures verify against ``state`` (re-checked here: media can change)."""
    try:
        envelope, manifest = peek(source)
    except ApplianceError:
        return {}
    authenticated = not isinstance(error, _UNAUTHENTICATED)
    if authenticated:
        try:
            verify_envelope(envelope, state.resolver(), PAYLOAD_TYPE)
        except ApplianceError:
            authenticated = False
    return manifest_claims(manifest, authenticated)


def _apply_carried_updates(
    db: Database, source: MediaSource, state: TrustState, dry_run: bool
) -> tuple[TrustState, list[int]]:
    """Trust updates first, each on its own merit: a broken bundle must not hide a revocation.

    Updates already applied (bundles carry the latest ones every time) are skipped.
    In a dry run they are verified and applied in memory only.
    """
    applied: list[int] = []
    try:
        for new, update, env in carried_updates(state, source):
            if not dry_run:
                commit_trust_update(db, new, update, env, source.location)
            state = new
            applied.append(state.version)
    except RejectedError as e:
        if not dry_run:  # what the bundle's manifest named, as for a refused import
            claims = _refused_claims(source, state, e)
            record_refusal(db, "trust_update", e, {"source": source.location, **claims})
        raise
    return state, applied


@dataclass
class _Decided:
    """The import's decision, complete: what is authenticated and what may enter.

    Everything after this point (staging, promotion, the commit) acts on it and
    decides nothing about the bundle's acceptability.
    """

    bundle: Bundle
    decision: Decision
    applied: list[int]
    models: ModelCheck
    state: TrustState  # the trust the decision was made under (carried updates applied)


def _decide(
    db: Database,
    source: MediaSource,
    wcheck: witness.WitnessCheck,
    path: str | os.PathLike[str],
    dry_run: bool,
) -> _Decided:
    """The same steps as ``appliance.evaluation.preview_bundle``, raising the first refusal."""
    state, applied = _apply_carried_updates(db, source, load_trust(db), dry_run)
    try:
        bundle, evaluation = evaluate_source(db, source, state, wcheck)
        decision = evaluation.decision()
        models = check_bundle_models(state, bundle)  # issue 17: OpenSSF model signatures
    except RejectedError as e:
        if not dry_run:
            claims = _refused_claims(source, state, e)
            record_refusal(db, "import", e, {"path": os.fspath(path), **claims})
        raise
    return _Decided(bundle, decision, applied, models, state)


def import_bundle(
    home: Home,
    path: str | os.PathLike[str],
    *,
    dry_run: bool = False,
    wait: bool = False,
    witness_path: Path | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    expect_identity: str | None = None,
) -> ImportResult:
    """Import (or with ``dry_run`` only verify) the bundle at ``path`` into ``home``.

    ``expect_identity``: the ``identity`` of the preview an operator reviewed; any other
    bundle at ``path`` is ``media_changed`` before anything is written (each document on
    the media is read once, so the decision is made on the bytes that were compared).
    """
    db = home.db()
    try:
        return _import(
            home, db, path, dry_run, wait, witness_path, progress, cancel, expect_identity
        )
    finally:
        db.conn.close()


def _import(
    home: Home,
    db: Database,
    path: str | os.PathLike[str],
    dry_run: bool,
    wait: bool,
    witness_path: Path | None,
    progress: Progress | None,
    cancel: threading.Event | None,
    expect_identity: str | None = None,
) -> ImportResult:
    with HomeLock(home, wait=wait):
        home.clean_staging()
        wpath = witness.configured_path(db, witness_path)
        wcheck = witness.check(db, wpath)
        if wcheck.status is witness.WitnessStatus.MISSING:
            witness.require_current(db, wpath)
        if not dry_run and wcheck.status is not witness.WitnessStatus.BEHIND:
            # A home behind its witness keeps every object, as evidence for responders.
            sweep_orphans(home, db)
        try:
            source = open_bundle_media(path)
        except RejectedError as e:  # archive tricks are refusals too: audit them
            if not dry_run:
                record_refusal(db, "import", e, {"path": os.fspath(path)})
            raise
        with source:
            if expect_identity is not None:
                require_identity(source, expect_identity)
            decided = _decide(db, source, wcheck, path, dry_run)
            # --- the decision is complete here; what follows acts on ``decided`` ---
            bundle, decision, models = decided.bundle, decided.decision, decided.models
            result = ImportResult(
                path=os.fspath(path),
                stream=bundle.manifest.stream,
                sequence=bundle.manifest.sequence,
                dry_run=dry_run,
                signers=sorted(decision.counted_signers),
                labels=decided.state.key_labels(sorted(decision.counted_signers)),
                trust_updates=decided.applied,
                model_signatures=models.to_list(),
                # the documents decided on (each read once from this source)
                identity=bundle_identity(source),
            )
            fix = repair.damaged(home, decision.present)  # replace bad objects (docs/WATCH.md)
            staged = _stage_all(home, bundle, decision, dry_run, progress, cancel, db, path, fix)
        result.bytes_verified = sum(a.size for a in bundle.manifest.artifacts)
        # Sets of names (unique in a manifest; a str caches its hash): "a in list" made this
        # loop quadratic, and an Artifact's hash is computed over all its fields each time.
        new_names = {a.name for a in decision.new}
        fix_names = {a.name for a in fix}
        for a in bundle.manifest.artifacts:
            result.artifacts.append(
                {
                    "name": a.name,
                    "version": a.version,
                    "size": a.size,
                    "digest": {"blake3": a.blake3},
                    "status": "new"
                    if a.name in new_names
                    else (
                        "present"
                        if a.name not in fix_names
                        else "damaged"
                        if dry_run
                        else "repaired"
                    ),
                }
            )
        if dry_run:
            return result
        try:
            if cancel is not None and cancel.is_set():  # the last moment a cancel can count
                raise CancelledError("import cancelled before promotion; nothing was changed")
            if staged:
                sync_home(home)  # the staged bytes are on disk before any rename
            # One descriptor of ``staging``, of ``objects`` and of each ``objects/xx`` for
            # the whole batch (``store.Promotion``), each file checked as ``promote`` does.
            with Promotion(home) as batch:
                batch.promote_all(
                    [(s, a.blake3) for name, (a, s) in staged.items() if name not in fix_names]
                )
                batch.check_folders()  # none swapped meanwhile, or no commit
            if len(staged) > len(fix_names):
                sync_home(home)  # and the renames before the commit refers to them
            _commit(db, bundle, decision, models, fix, os.fspath(path))
            # Repairs go over the damaged objects only once their ``repair`` events are
            # committed: a crash in between leaves an event and a still-damaged object
            # (refused by every load, found by scrub, repaired by the next import), never
            # a silently replaced object without its event.
            # (``promote`` clears a flagged object's immutable flag and renames by
            # descriptor: a link swapped in at ``objects/xx`` is refused, never followed.)
            if fix:
                for a in fix:
                    promote(home, staged[a.name][1], a.blake3, durable=False)
                sync_home(home)
        finally:
            home.clean_staging()
        if wcheck.status is not witness.WitnessStatus.OFF:
            result.warnings += witness.refresh_after_commit(db, wpath)
    return result


def _stage_all(
    home: Home,
    bundle: Bundle,
    decision: Decision,
    dry_run: bool,
    progress: Progress | None,
    cancel: threading.Event | None,
    db: Database,
    path: str | os.PathLike[str],
    fix: list[Artifact] | None = None,
) -> dict[str, tuple[Artifact, Staged]]:
    """Hash every artifact (present ones too: the bundle must be whole); stage new ones.

    Returns each staged artifact and its staging file by artifact name (names are unique
    in a manifest), largest first."""
    with ExitStack() as stack:
        # One descriptor of ``staging`` (``O_DIRECTORY | O_NOFOLLOW``) for every staging
        # file: a link swapped in at ``staging`` while the import runs is never followed.
        folder = None if dry_run else stack.enter_context(home.open_dir(STAGING_DIR, create=0o700))
        if folder is None and not dry_run:  # made, then removed before it was opened
            raise IOFailedError(f"the staging folder {home.staging} vanished")
        return _stage_into(home, folder, bundle, decision, dry_run, progress, cancel, db, path, fix)


def _stage_into(
    home: Home,
    folder: int | None,
    bundle: Bundle,
    decision: Decision,
    dry_run: bool,
    progress: Progress | None,
    cancel: threading.Event | None,
    db: Database,
    path: str | os.PathLike[str],
    fix: list[Artifact] | None,
) -> dict[str, tuple[Artifact, Staged]]:
    stop = cancel or threading.Event()
    new = {a.name for a in decision.new} | {a.name for a in fix or ()}
    staged: dict[str, tuple[Artifact, Staged]] = {}

    def one(a: Artifact, report: bool = True) -> Staged | None:
        target_dir = None if dry_run or a.name not in new else folder
        try:
            return stage_artifact(
                bundle,
                a,
                target_dir,
                progress=progress if report else None,
                cancel=stop,
                durable=False,
            )
        except BaseException:
            stop.set()
            raise

    def helper_progress(a: Artifact) -> None:
        if progress is not None:
            progress(a.name, a.size, a.size)

    # Durability is the caller's: one sync_home for the whole batch, not an fsync per file.
    # Tiny artifacts are staged here, one after another (for them a hand-over to a worker
    # thread costs more than the work), and by a forked helper beside this process where
    # it may fork (``tiny_stager``, started before any thread). The others go to a pool
    # meanwhile (largest first).
    order = sorted(bundle.manifest.artifacts, key=lambda a: -a.size)
    inline = [a.size <= INLINE and len(a.parts) <= 1 for a in order]
    pooled = [i for i, here in enumerate(inline) if not here]
    tiny = [i for i, here in enumerate(inline) if here]
    small = sum(1 for i in pooled if order[i].size <= SMALL)
    workers = PARALLEL_SMALL if small > len(pooled) // 2 else PARALLEL_ARTIFACTS
    outcome: list[Staged | None | BaseException] = [None] * len(order)
    with ExitStack() as stack:
        expects = [not dry_run and order[i].name in new for i in tiny]
        stager = stack.enter_context(
            tiny_stager([order[i] for i in tiny], expects, one, stop, helper_progress)
        )
        futures = []
        if pooled:
            pool = stack.enter_context(ThreadPoolExecutor(max_workers=workers))
            futures = [(i, pool.submit(one, order[i])) for i in pooled]
        try:
            for i, got in zip(tiny, stager.run(), strict=True):
                outcome[i] = got
        except BaseException:
            stop.set()  # an interrupt here: the pool's artifacts stop too
            raise
    for i, fut in futures:
        exc = fut.exception()
        outcome[i] = fut.result() if exc is None else exc
    first_error: BaseException | None = None
    for a, p in zip(order, outcome, strict=True):
        if isinstance(p, BaseException):
            if first_error is None or _error_rank(p) > _error_rank(first_error):
                first_error = p
        elif p is not None:
            staged[a.name] = (a, p)
    if first_error is not None:
        if not dry_run:
            home.clean_staging()
            if isinstance(first_error, RejectedError):
                claims = manifest_claims(bundle.manifest, authenticated=True)
                record_refusal(db, "import", first_error, {"path": os.fspath(path), **claims})
        raise first_error
    return staged


def _error_rank(exc: BaseException) -> int:
    """Which failure of the parallel artifact passes to report: a refusal, then the real
    I/O error, and only last the cancellation that the first failure caused in the others.
    """
    if isinstance(exc, RejectedError):
        return 2
    return 0 if isinstance(exc, CancelledError) else 1


def _commit(
    db: Database,
    bundle: Bundle,
    decision: Decision,
    models: ModelCheck,
    repaired: list[Artifact],
    source: str,
) -> None:
    """Records, refs, marks and every audit event of the import (repairs too) in one go."""
    m = bundle.manifest
    now = format_time(utcnow())
    signers = json.dumps(sorted(bundle.signers))
    signer_list = sorted(bundle.signers)
    # One statement per table for the whole batch (``executemany``) and every event of the
    # import in one ``audit.append_many``: the chain head, clock and trusted time are read
    # once, not once per artifact. The events are the same, in the same order.
    events: list[tuple[str, dict[str, Any]]] = [
        (
            "import",
            {
                "outcome": "accepted",
                "name": a.name,
                "version": a.version,
                "detail": {
                    "digest": a.blake3,
                    "size": a.size,
                    "stream": m.stream,
                    "sequence": m.sequence,
                    "release": a.release,
                    "signers": signer_list,
                    "activated": True,
                    **models.audit_detail(a.name),
                },
            },
        )
        for a in decision.new
    ]
    events.append(
        (
            "bundle_import",
            {
                "outcome": "accepted",
                "detail": {
                    "stream": m.stream,
                    "sequence": m.sequence,
                    "signers": signer_list,
                    "new": [a.ref for a in decision.new],
                    "present": [a.ref for a in decision.present],
                    **({"model_signatures": models.to_list()} if models.signatures else {}),
                },
            },
        )
    )
    with transaction(db):
        db.conn.executemany(
            "INSERT INTO artifacts (name, version, digest, size, media_type, release, stream,"
            " sequence, signers, imported_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    a.name,
                    a.version,
                    a.blake3,
                    a.size,
                    a.media_type,
                    a.release,
                    m.stream,
                    m.sequence,
                    signers,
                    now,
                )
                for a in decision.new
            ],
        )
        db.conn.executemany(
            "INSERT INTO names (name, stream, release) VALUES (?, ?, ?) ON CONFLICT(name)"
            " DO UPDATE SET release = excluded.release",
            [(a.name, m.stream, a.release) for a in decision.new],
        )
        db.conn.executemany(
            "INSERT INTO active (name, version, moved_at) VALUES (?, ?, ?) ON CONFLICT(name)"
            " DO UPDATE SET version = excluded.version, moved_at = excluded.moved_at",
            [(a.name, a.version, now) for a in decision.new],
        )
        db.execute(
            "INSERT INTO manifests (stream, sequence, envelope, imported_at) VALUES (?, ?, ?, ?)",
            [m.stream, m.sequence, bundle.envelope.to_bytes(), now],
        )
        db.execute(
            "INSERT INTO streams (stream, sequence, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT(stream) DO UPDATE SET sequence = excluded.sequence,"
            " updated_at = excluded.updated_at",
            [m.stream, m.sequence, now],
        )
        audit.append_many(db, events)
        repair.record(db, repaired, source)  # with the records: no repair without its event
