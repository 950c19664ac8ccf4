"""Atheris: trust-update and rollback-authorization parsers, and the trust state machine.

The input is parsed as both documents, then signed by the root key and fed to
``appliance.trust.apply_update`` (so the operations are reached, not only the
signature check). Only ``bundles.errors.ApplianceError`` may escape.
"""

from __future__ import annotations

import sys

import atheris  # type: ignore[import-not-found,unused-ignore]

with atheris.instrument_imports():
    from _common import ALLOWED, ROOT

    from appliance.trust import TrustState, apply_update
    from bundles.documents import TRUST_PAYLOAD_TYPE, RollbackAuthorization, TrustUpdate
    from bundles.dsse import sign_envelope

STATE = TrustState.initial([ROOT.public], 1)


def test_one_input(data: bytes) -> None:
    for parse in (TrustUpdate.from_payload, RollbackAuthorization.from_payload):
        try:
            parse(data)
        except ALLOWED:
            pass
    try:
        new, update = apply_update(STATE, sign_envelope(TRUST_PAYLOAD_TYPE, data, [ROOT]))
    except ALLOWED:
        return
    if new.version != STATE.version + 1 or new.members(("root", "")) & new.revoked:
        raise AssertionError("trust state machine invariant broken")


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
