"""Repair at import: a present artifact whose stored object fails its hash is replaced.

An import hashes every artifact of the bundle anyway. For an artifact the store
already has, ``damaged`` re-hashes the stored object: when it is missing or no
longer hashes to its digest, the import stages the bundle's (verified) bytes
like a new artifact and ``record`` writes one ``repair`` audit event per artifact
in the transaction that commits the import's records. Only after that commit
does the store's ``promote`` clear the immutable inode flag of the bad object (if
it carries one) and rename the verified copy over it, both by descriptor (never
through a link at ``objects/xx``; a link, FIFO or device at the object's own
name is replaced as a name, never opened for an ``ioctl``), so a crash
never leaves a replaced object without its event (at worst an event and a
still-damaged object, which every load refuses and the next import repairs).
The import reports such an artifact as ``repaired``; ``present`` means the
stored object verified.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from appliance import audit, safefs
from appliance.db import Database
from appliance.home import Home
from appliance.store import io_error, open_stored
from bundles.hashing import hash_fd
from bundles.manifest import Artifact


def _stored_ok(home: Home, a: Artifact) -> bool:
    """Does the stored object of ``a`` hash to its digest? Opened by descriptor
    (``store.open_stored``): a link or anything but a folder at ``objects`` or
    ``objects/xx`` is ``home_tampered``; a link, FIFO, device or folder at the object's
    own name is a damaged object (replaced by the import as a name, never followed)."""
    try:
        fd = open_stored(home, a.blake3)
    except safefs.UnsafeEntryError:
        return False
    except OSError as e:
        raise io_error(e, f"opening the stored object {a.blake3[:16]}") from e
    if fd is None:
        return False
    try:
        digest, size = hash_fd(fd)
    except OSError:
        return False  # unreadable bytes: damaged; the verified copy replaces them
    finally:
        os.close(fd)
    return digest == a.blake3 and size == a.size


def damaged(home: Home, present: Iterable[Artifact]) -> list[Artifact]:
    """The present artifacts whose stored object is missing or fails its hash."""
    return [a for a in present if not _stored_ok(home, a)]


def record(db: Database, artifacts: Iterable[Artifact], source: str) -> None:
    """One ``repair`` event per replaced object, written in the caller's transaction.

    The import calls this inside the transaction that commits its records, so the
    repair events and the import's records are committed together or not at all.
    """
    for a in artifacts:
        audit.append(
            db,
            "repair",
            outcome="accepted",
            name=a.name,
            version=a.version,
            detail={"digest": a.blake3, "size": a.size, "source": source},
        )
