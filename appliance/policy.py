"""Import policy: may this authenticated bundle enter this store? Pure checks.

``evaluate_bundle`` runs every check, in order, none skipped, and returns the
list (for previews: the TUI's review, ``appliance media``'s status column);
``Evaluation.decision`` raises the first failing one (for the import). Order:
signers meet the publisher threshold of the stream; the bundle is for this
site; it has not expired against trusted time; its sequence is above the
stream's high-water mark; each name belongs to this stream, a name@version
already stored has the same bytes, each release counter goes up; last, a home
behind its witness takes only a bundle that brings it up to date.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from appliance.errors import (
    ApplianceError,
    ExpiredError,
    NameOwnershipError,
    ReleaseCounterError,
    SequenceOlderError,
    SequenceReplayError,
    VersionConflictError,
    WrongSiteError,
)
from appliance.trust import TrustState, describe, role_key
from bundles.manifest import Artifact, Manifest
from bundles.timeutil import format_time


@dataclass(frozen=True)
class StoreView:
    """What the policy needs to know of the store."""

    site: str | None
    sequences: dict[str, int]
    owners: dict[str, tuple[str, int]]  # name -> (stream, highest release)
    digests: dict[tuple[str, str], str]  # (name, version) -> blake3


@dataclass(frozen=True)
class WitnessGate:
    """The witness's say on this bundle: its status and the refusal, if it refuses."""

    status: str  # off | current | behind | missing
    detail: str
    error: ApplianceError | None = None


WITNESS_OFF = WitnessGate("off", "no witness configured")


@dataclass(frozen=True)
class BundleCheck:
    label: str
    ok: bool
    detail: str
    error: ApplianceError | None = None  # set exactly when not ok


@dataclass(frozen=True)
class Decision:
    counted_signers: frozenset[str]
    new: tuple[Artifact, ...]  # artifacts to stage and promote
    present: tuple[Artifact, ...]  # same name@version and bytes already stored


# What the home screen calls a bundle, by the code of its first failing check.
STATUS_BY_CODE: dict[str, str] = {
    "sequence_replayed": "imported",
    "sequence_older": "older",
    "expired": "expired",
    "wrong_site": "other site",
}


_UNCLAIMED = ("Signers", "Witness")


@dataclass(frozen=True)
class Evaluation:
    checks: tuple[BundleCheck, ...]
    counted_signers: frozenset[str]
    threshold: int
    new: tuple[Artifact, ...]
    present: tuple[Artifact, ...]
    artifact_status: dict[str, str]  # ref -> new | present | conflict | owned by S | ...

    @property
    def first_error(self) -> ApplianceError | None:
        return next((c.error for c in self.checks if c.error is not None), None)

    @property
    def allowed(self) -> bool:
        return self.first_error is None

    @property
    def status(self) -> str:
        """``new`` when allowed, else what the first refusal says (``imported``, ...)."""
        error = self.first_error
        if error is None:
            return "new"
        return STATUS_BY_CODE.get(error.code, "refused")

    @property
    def claimed_status(self) -> str:
        """``status`` from what an UNVERIFIED manifest claims: signatures and witness aside
        (the review checks them), is it new, already imported, older, expired, elsewhere?"""
        error = next(
            (c.error for c in self.checks if c.error is not None and c.label not in _UNCLAIMED),
            None,
        )
        return "new" if error is None else STATUS_BY_CODE.get(error.code, "refused")

    def decision(self) -> Decision:
        """What to import; raises the first failing check."""
        error = self.first_error
        if error is not None:
            raise error
        return Decision(self.counted_signers, self.new, self.present)


def _signers_check(
    trust: TrustState, manifest: Manifest, signers: frozenset[str]
) -> tuple[BundleCheck, frozenset[str], int]:
    role = role_key("publisher", manifest.stream)
    need = trust.threshold(role)
    counted = frozenset(s for s in signers if s in trust.members(role))
    met = "met" if len(counted) >= need else "NOT met"
    detail = f"{len(counted)} of {need} {describe(role)}: {met}"
    try:
        trust.check_signers(signers, role)
    except ApplianceError as e:
        return BundleCheck("Signers", False, detail, e), counted, need
    return BundleCheck("Signers", True, detail), counted, need


def _sequence_check(view: StoreView, manifest: Manifest) -> BundleCheck:
    mark = view.sequences.get(manifest.stream, 0)
    seq = manifest.sequence
    text = f"{manifest.stream} #{seq}, installed #{mark}"
    if seq > mark:
        return BundleCheck("Sequence", True, f"{text}: newer")
    if seq == mark:
        error: ApplianceError = SequenceReplayError(
            f"stream {manifest.stream} sequence {seq} was already imported"
        )
        return BundleCheck("Sequence", False, f"{text}: REPLAYED", error)
    error = SequenceOlderError(f"stream {manifest.stream} sequence {seq} is older than {mark}")
    return BundleCheck("Sequence", False, f"{text}: OLDER", error)


def _artifact_checks(
    view: StoreView, manifest: Manifest
) -> tuple[list[BundleCheck], list[Artifact], list[Artifact], dict[str, str]]:
    checks: list[BundleCheck] = []
    new: list[Artifact] = []
    present: list[Artifact] = []
    status: dict[str, str] = {}
    for a in manifest.artifacts:
        owner = view.owners.get(a.name)
        stored = view.digests.get((a.name, a.version))
        error: ApplianceError | None = None
        if owner is not None and owner[0] != manifest.stream:
            error = NameOwnershipError(f"artifact {a.name!r} belongs to stream {owner[0]}")
            status[a.ref] = f"owned by {owner[0]}"
        elif stored is not None and stored != a.blake3:
            error = VersionConflictError(
                f"{a.ref} is already stored with other bytes ({stored[:16]})"
            )
            status[a.ref] = "CONFLICT"
        elif stored is not None:
            present.append(a)
            status[a.ref] = "present"
        elif owner is not None and a.release <= owner[1]:
            error = ReleaseCounterError(
                f"{a.ref} release {a.release} is not above the stored release {owner[1]}"
            )
            status[a.ref] = "release too low"
        else:
            new.append(a)
            status[a.ref] = "new"
        if error is not None:
            checks.append(BundleCheck(a.ref, False, status[a.ref], error))
    return checks, new, present, status


def evaluate_bundle(
    trust: TrustState,
    view: StoreView,
    manifest: Manifest,
    signers: frozenset[str],
    now: datetime,
    witness: WitnessGate = WITNESS_OFF,
) -> Evaluation:
    """Every policy check of ``manifest`` (authenticated by ``signers``), in order."""
    signers_check, counted, need = _signers_check(trust, manifest, signers)
    sites = ", ".join(manifest.sites) if manifest.sites else "any site"
    here = view.site or "unnamed"
    checks = [
        signers_check,
        BundleCheck(
            "Site",
            manifest.allows_site(view.site),
            f"{sites}; here: {view.site or '-'}",
            None
            if manifest.allows_site(view.site)
            else WrongSiteError(
                f"bundle is for site(s) {', '.join(manifest.sites)}, this appliance is {here}"
            ),
        ),
        BundleCheck(
            "Expires",
            manifest.expires > now,
            f"{format_time(manifest.expires)} (trusted time {format_time(now)})",
            None
            if manifest.expires > now
            else ExpiredError(
                f"bundle expired at {format_time(manifest.expires)} "
                f"(trusted time {format_time(now)})"
            ),
        ),
        _sequence_check(view, manifest),
    ]
    artifact_checks, new, present, status = _artifact_checks(view, manifest)
    checks += artifact_checks
    checks.append(BundleCheck("Witness", witness.error is None, witness.detail, witness.error))
    return Evaluation(tuple(checks), counted, need, tuple(new), tuple(present), status)


def check_bundle(
    trust: TrustState,
    view: StoreView,
    manifest: Manifest,
    signers: frozenset[str],
    now: datetime,
) -> Decision:
    """The import's decision without a witness: raises the first failing check."""
    return evaluate_bundle(trust, view, manifest, signers, now).decision()
