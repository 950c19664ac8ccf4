"""May this loader load this record? Decided from today's root-signed grants only.

A grant (``trust update --allow-loader USER --stream S [--artifact NAME ...]
[--any-version]``) names a user or ``unit:NAME.service``. The loader's
principals are its user name (from its uid; none when the uid has no passwd
entry) and its systemd unit (from its cgroup; none outside a service unit).
uid 0 is not special. Pure: no I/O; ``identity`` and ``trust`` come in.
"""

from __future__ import annotations

from appliance.errors import LoaderNotAuthorizedError
from appliance.service.identity import Identity
from appliance.store import Record
from appliance.trust import LoaderGrant, TrustState


def matching_grants(trust: TrustState, identity: Identity) -> list[LoaderGrant]:
    principals = set(identity.principals())
    return [g for g in trust.grants if g.principal in principals]


def authorize(trust: TrustState, identity: Identity, record: Record) -> LoaderGrant:
    """The grant that lets ``identity`` load ``record``; ``LoaderNotAuthorizedError`` if none."""
    mine = matching_grants(trust, identity)
    for g in mine:
        if g.covers(record.name, record.stream, record.active):
            return g
    ref = f"{record.name}@{record.version}"
    who = identity.describe()
    if not mine:
        raise LoaderNotAuthorizedError(f"{who} holds no loader grant; {ref} refused")
    if any(g.covers(record.name, record.stream, True) for g in mine):
        raise LoaderNotAuthorizedError(
            f"{who} may load only the active version of {record.name}; "
            f"{record.version} is not active (a grant needs --any-version for that)"
        )
    raise LoaderNotAuthorizedError(f"{who} holds no grant covering {ref} (stream {record.stream})")
