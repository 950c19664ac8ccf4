"""The trust anchor: what a writer of the home must not be able to change, kept outside it.

``init`` writes one anchor per home: the root keys and threshold (trust version
1), the site, the witness's location and the home's identity (its path and a
random id, also stored in the home). Every command derives the trust state
from the anchor plus the chain of root-signed documents stored in the home
(``appliance.evidence``), so an edited table in the home changes nothing but
an alarm.

Where: ``--anchor FILE`` or ``APPLIANCE_ANCHOR``; else
``ANCHOR_DIR/<first 32 hex of SHA-256 of the home's real path>.json`` where
``ANCHOR_DIR`` is ``APPLIANCE_ANCHOR_DIR``, else ``/etc/appliance/anchors`` for
root, else ``$XDG_CONFIG_HOME/appliance/anchors``. Deployed, the folder is
root-owned and the file 0644: the service user reads it, nobody else writes it.

Like OpenSSH's StrictModes, an anchor (and its folder) that a user other than
its owner can write, or that is owned by someone other than root or us, is
refused. A copy of a home at another path has no anchor at its default place;
with ``--anchor`` naming the original's, it is refused unless ``--read-only``
(the anchor says which home it belongs to).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.errors import (
    AnchorExistsError,
    AnchorInvalidError,
    AnchorMismatchError,
    AnchorMissingError,
    IOFailedError,
)
from appliance.trust import TrustState
from bundles.errors import KeyFormatError
from bundles.keys import PublicKey

FORMAT = 1
MAX_ANCHOR_BYTES = 256 * 1024

__all__ = [
    "Anchor",
    "anchor_dir",
    "anchor_path",
    "copy_anchor",
    "home_key",
    "new_home_id",
    "read_anchor",
    "replace_anchor_witness",
    "write_anchor",
]


def anchor_dir() -> Path:
    env = os.environ.get("APPLIANCE_ANCHOR_DIR")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/etc/appliance/anchors")
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "appliance" / "anchors"


def home_key(home_root: Path) -> str:
    """The home's identity by place: its real path (a copy elsewhere is another home)."""
    return os.path.realpath(home_root)


def anchor_path(home_root: Path, given: Path | None = None, *, key: str | None = None) -> Path:
    """Where the anchor of the home at ``home_root`` lives; ``key`` is its ``home_key``
    when the caller has already taken it."""
    if given is not None:
        return given
    env = os.environ.get("APPLIANCE_ANCHOR")
    if env:
        return Path(env)
    key = home_key(home_root) if key is None else key
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()
    return anchor_dir() / f"{digest[:32]}.json"


def new_home_id() -> str:
    return secrets.token_hex(16)


@dataclass(frozen=True)
class Anchor:
    path: Path
    home: str
    home_id: str
    root_keys: tuple[PublicKey, ...]
    root_threshold: int
    site: str | None
    witness: Path | None
    created_at: str

    def initial_trust(self) -> TrustState:
        return TrustState.initial(list(self.root_keys), self.root_threshold)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "home": self.home,
            "home_id": self.home_id,
            "root_keys": [k.to_pem().decode() for k in self.root_keys],
            "root_threshold": self.root_threshold,
            "site": self.site,
            "witness": str(self.witness) if self.witness else None,
            "created_at": self.created_at,
        }

    def describe(self) -> dict[str, Any]:
        """What ``trust show`` reports of the anchor."""
        return {
            "path": str(self.path),
            "home": self.home,
            "home_id": self.home_id,
            "root_keys": sorted(k.keyid for k in self.root_keys),
            "root_threshold": self.root_threshold,
            "witness": str(self.witness) if self.witness else None,
        }

    def check_home(
        self, home_root: Path, home_id: str | None, *, read_only: bool, key: str | None = None
    ) -> None:
        """The anchor belongs to this home: same id, and (unless read-only) the same place
        (``key``: the home's ``home_key``, when the caller has already taken it)."""
        if home_id != self.home_id:
            raise AnchorMismatchError(
                f"trust anchor {self.path} belongs to another home (id {self.home_id[:12]}, "
                f"this home's is {(home_id or 'absent')[:12]})"
            )
        if read_only:
            return
        key = home_key(home_root) if key is None else key
        if key != self.home:
            raise AnchorMismatchError(
                f"trust anchor {self.path} belongs to the home at {self.home}, not "
                f"{key}: a copied home is examined with --read-only"
            )


def copy_anchor(src_home: Path, dst_home: Path) -> Path:
    """Give a copy of a home (made by the caller, e.g. a benchmark's fresh home from a
    template) its own anchor at its own place, with the same root, site and id and no
    witness. Needs write access to the anchor folder, which a writer of a home lacks.
    """
    src = read_anchor(anchor_path(src_home))
    dst = dataclasses.replace(
        src, path=anchor_path(dst_home), home=home_key(dst_home), witness=None
    )
    write_anchor(dst, replace=True)
    return dst.path


def replace_anchor_witness(anchor: Anchor, witness: Path | None) -> Anchor:
    return dataclasses.replace(anchor, witness=witness)


def _check_owner(st: os.stat_result, what: str, path: Path) -> None:
    if st.st_uid not in (0, os.geteuid()):
        raise AnchorInvalidError(f"{what} {path} is owned by uid {st.st_uid}, not root or us")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise AnchorInvalidError(f"{what} {path} is writable by others than its owner")


def read_anchor(path: Path) -> Anchor:
    """Read and validate an anchor; exit 4 when absent, unsafe or malformed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError as e:
        raise AnchorMissingError(
            f"no trust anchor at {path}: this home was not initialised here, or it is a copy "
            "(examine copies with --read-only --anchor FILE)"
        ) from e
    except OSError as e:
        raise AnchorInvalidError(f"cannot open trust anchor {path}: {e.strerror}") from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise AnchorInvalidError(f"trust anchor {path} is not a regular file")
        _check_owner(st, "trust anchor", path)
        _check_owner(os.stat(path.parent), "trust anchor folder", path.parent)
        data = os.read(fd, MAX_ANCHOR_BYTES + 1)
    except OSError as e:
        raise AnchorInvalidError(f"cannot read trust anchor {path}: {e.strerror}") from e
    finally:
        os.close(fd)
    if len(data) > MAX_ANCHOR_BYTES:
        raise AnchorInvalidError(f"trust anchor {path} is too large")
    memo = (str(path), data)
    anchor = _parsed.get(memo)
    if anchor is None:
        anchor = _parse(path, data)
        if len(_parsed) >= 16:
            _parsed.clear()
        _parsed[memo] = anchor
    return anchor


# Parsed anchors by (path, exact bytes): every read still opens, checks and reads the file;
# only the JSON and PEM parsing of bytes already seen is skipped (an Anchor is immutable).
_parsed: dict[tuple[str, bytes], Anchor] = {}


def _parse(path: Path, data: bytes) -> Anchor:
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError("not an appliance trust anchor")
        keys = tuple(PublicKey.from_pem(str(p).encode()) for p in doc["root_keys"])
        threshold = doc["root_threshold"]
        if not isinstance(threshold, int) or not 1 <= threshold <= len(keys):
            raise ValueError("bad root threshold")
        home, home_id = doc["home"], doc["home_id"]
        if not isinstance(home, str) or not isinstance(home_id, str) or len(home_id) != 32:
            raise ValueError("bad home identity")
        site, wit = doc.get("site"), doc.get("witness")
        if site is not None and not isinstance(site, str):
            raise ValueError("bad site")
        if wit is not None and not isinstance(wit, str):
            raise ValueError("bad witness")
        return Anchor(
            path=path,
            home=home,
            home_id=home_id,
            root_keys=keys,
            root_threshold=threshold,
            site=site,
            witness=Path(wit) if wit else None,
            created_at=str(doc.get("created_at", "")),
        )
    except (ValueError, KeyError, TypeError, KeyFormatError) as e:
        raise AnchorInvalidError(f"trust anchor {path} is malformed: {e}") from e


def write_anchor(anchor: Anchor, *, replace: bool = False) -> None:
    """Write the anchor (0644) by a fresh temporary name, then rename into place.

    Without ``replace`` an existing anchor is never overwritten.
    """
    path = anchor.path
    data = json.dumps(anchor.to_dict(), indent=2, sort_keys=True).encode() + b"\n"
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644
        )
        try:
            os.fchmod(fd, 0o644)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
            os.unlink(tmp)
        dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except FileExistsError as e:
        tmp.unlink(missing_ok=True)
        raise AnchorExistsError(
            f"a trust anchor already exists at {path}; remove it only if its home was "
            "deliberately destroyed"
        ) from e
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise IOFailedError(f"cannot write trust anchor {path}: {e.strerror}") from e
