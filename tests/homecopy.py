"""Copies of prepared homes for tests, each with its own trust anchor.

A home's trust anchor (outside the home) names the place of the home it belongs
to, so a plain ``cp -a`` of a home is, to the appliance, a forensic copy that
only ``--read-only`` may examine. Tests that want a fresh *working* home from a
template re-bind the copy: they write the anchor that ``init`` would have
written at the new place (an operator cannot do this without write access to
the anchor folder, which a writer of the home does not have).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from appliance.anchor import anchor_path


def rebind_anchor(src_home: Path, dst_home: Path, *, witness: Path | None = None) -> Path:
    """Write an anchor for ``dst_home`` from ``src_home``'s, naming ``witness`` (or none)."""
    doc = json.loads(anchor_path(src_home).read_text())
    doc["home"] = os.path.realpath(dst_home)
    doc["witness"] = os.path.abspath(witness) if witness is not None else None
    dst = anchor_path(dst_home)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, dst)
    return dst


def rebind_witness(witness: Path, home: Path) -> None:
    """A copied witness file made to belong to the copied ``home``."""
    doc = json.loads(witness.read_text())
    doc["home"] = os.path.realpath(home)
    witness.write_text(json.dumps(doc, sort_keys=True))


def copy_home(
    src: Path,
    dst: Path,
    *,
    witness_src: Path | None = None,
    witness_dst: Path | None = None,
) -> Path:
    """``cp -a`` of a home (modes, times, everything) re-bound to its new place.

    With ``witness_src`` and ``witness_dst``, the witness is copied too and the
    copy's anchor names the copied witness.
    """
    if dst.exists():
        shutil.rmtree(dst)
    subprocess.run(["cp", "-a", str(src), str(dst)], check=True)
    if witness_src is not None and witness_dst is not None:
        subprocess.run(["cp", "-a", str(witness_src), str(witness_dst)], check=True)
        rebind_witness(witness_dst, dst)
    rebind_anchor(src, dst, witness=witness_dst)
    return dst
