"""The envelope's base64 decoder (``bundles.dsse._b64``, ``binascii.a2b_base64`` in strict
mode) accepts and refuses exactly what ``base64.b64decode(validate=True)`` does, and gives
the same bytes: every string of up to 8 characters over an alphabet with padding, letters,
digits, ``+``, ``/`` and the usual impostors (URL-safe ``-`` and ``_``, space, newline,
NUL), then random longer ones."""

from __future__ import annotations

import base64
import binascii
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bundles.dsse import _b64
from bundles.errors import EnvelopeFormatError

ALPHABET = "AB+/=z09-_ \n\x00é"


def _reference(text: str) -> bytes | None:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        return None


def _ours(text: str) -> bytes | None:
    try:
        return _b64(text, "payload")
    except EnvelopeFormatError as e:
        assert e.message == "payload is not valid base64"
        return None


def test_every_short_string_is_judged_as_b64decode_validate_judges_it() -> None:
    checked = refused = 0
    for n in range(7):
        for chars in itertools.product("AB=+/-\n", repeat=n):
            text = "".join(chars)
            assert _ours(text) == _reference(text), repr(text)
            checked += 1
            refused += _reference(text) is None
    assert refused and refused < checked  # both outcomes were really exercised


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet=ALPHABET, max_size=40))
def test_random_strings_are_judged_alike(text: str) -> None:
    assert _ours(text) == _reference(text)


@pytest.mark.parametrize("size", [0, 1, 2, 3, 100, 4097])
def test_real_payloads_round_trip(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    assert _b64(base64.b64encode(data).decode("ascii"), "payload") == data


@pytest.mark.parametrize("text", ["QQ==QQ==", "=QQ=", "QQ===", "QQ", "Q Q=", "QQ==\n", "Q-Q="])
def test_malformed_is_refused_with_the_stable_error(text: str) -> None:
    with pytest.raises(EnvelopeFormatError) as info:
        _b64(text, "payload")
    assert info.value.code == EnvelopeFormatError.code
