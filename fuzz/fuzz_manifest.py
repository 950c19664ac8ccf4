"""Atheris: the manifest statement parser and the DSSE envelope reader.

Only ``bundles.errors.ApplianceError`` may escape. Run with ``make fuzz``.
"""

from __future__ import annotations

import sys

import atheris  # type: ignore[import-not-found,unused-ignore]

with atheris.instrument_imports():
    from _common import ALLOWED, PUB

    from bundles.dsse import Envelope, verify_envelope
    from bundles.manifest import PAYLOAD_TYPE, Manifest


def test_one_input(data: bytes) -> None:
    try:
        Manifest.from_payload(data)
    except ALLOWED:
        pass
    try:
        env = Envelope.from_bytes(data)
        verify_envelope(env, {PUB.keyid: PUB.public}.get, PAYLOAD_TYPE)
        Manifest.from_payload(env.payload)
    except ALLOWED:
        pass


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
