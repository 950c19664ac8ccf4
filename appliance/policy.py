"""Import policy: may this authenticated bundle enter this store? Pure checks.

Order: signers meet the publisher threshold of the stream; the bundle is for
this site; it has not expired against trusted time; its sequence is above the
stream's high-water mark; each name belongs to this stream; each release
counter goes up; a name@version already stored has the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from appliance.errors import (
    ExpiredError,
    NameOwnershipError,
    ReleaseCounterError,
    SequenceOlderError,
    SequenceReplayError,
    VersionConflictError,
    WrongSiteError,
)
from appliance.trust import TrustState, role_key
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
class Decision:
    counted_signers: frozenset[str]
    new: tuple[Artifact, ...]  # artifacts to stage and promote
    present: tuple[Artifact, ...]  # same name@version and bytes already stored


def check_bundle(
    trust: TrustState,
    view: StoreView,
    manifest: Manifest,
    signers: frozenset[str],
    now: datetime,
) -> Decision:
    counted = trust.check_signers(signers, role_key("publisher", manifest.stream))
    if not manifest.allows_site(view.site):
        raise WrongSiteError(
            f"bundle is for site(s) {', '.join(manifest.sites)}, this appliance is "
            f"{view.site or 'unnamed'}"
        )
    if manifest.expires <= now:
        raise ExpiredError(
            f"bundle expired at {format_time(manifest.expires)} (trusted time {format_time(now)})"
        )
    mark = view.sequences.get(manifest.stream, 0)
    if manifest.sequence == mark:
        raise SequenceReplayError(
            f"stream {manifest.stream} sequence {manifest.sequence} was already imported"
        )
    if manifest.sequence < mark:
        raise SequenceOlderError(
            f"stream {manifest.stream} sequence {manifest.sequence} is older than {mark}"
        )
    new: list[Artifact] = []
    present: list[Artifact] = []
    for a in manifest.artifacts:
        owner = view.owners.get(a.name)
        if owner is not None and owner[0] != manifest.stream:
            raise NameOwnershipError(f"artifact {a.name!r} belongs to stream {owner[0]}")
        stored = view.digests.get((a.name, a.version))
        if stored is not None:
            if stored != a.blake3:
                raise VersionConflictError(
                    f"{a.ref} is already stored with other bytes ({stored[:16]})"
                )
            present.append(a)
            continue
        if owner is not None and a.release <= owner[1]:
            raise ReleaseCounterError(
                f"{a.ref} release {a.release} is not above the stored release {owner[1]}"
            )
        new.append(a)
    return Decision(counted, tuple(new), tuple(present))
