"""The C-encoder fast path of ``canonical_bytes`` writes the bytes ``rfc8785`` writes."""

from __future__ import annotations

from typing import Any

import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from bundles.canonical import canonical_bytes

_ascii = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=127), max_size=12)
_any_text = st.text(max_size=6)
_ints = st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
_values = st.recursive(
    st.none() | st.booleans() | _ints | _ascii | _any_text,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(_ascii | _any_text, inner, max_size=4)
    ),
    max_leaves=60,
)


@settings(max_examples=500, deadline=None)
@given(_values)
def test_same_bytes_as_rfc8785(doc: Any) -> None:
    try:
        expected = bytes(rfc8785.dumps(doc))
    except Exception:  # noqa: BLE001 - whatever rfc8785 refuses, canonical_bytes refuses
        try:
            canonical_bytes(doc)
        except ValueError:
            return
        raise AssertionError(f"accepted what rfc8785 refuses: {doc!r}") from None
    assert canonical_bytes(doc) == expected


def test_edges() -> None:
    for doc in (
        {"b": 1, "a": [True, False, None], "": '\x00\x1f\x7f"\\/\b\f\n\r\t'},
        {"n": 2**53 - 1, "m": -(2**53) + 1},
        {"big": 2**60},  # outside I-JSON: rfc8785's own verdict
        {"f": 1.0, "g": 1e21, "h": 0.1},  # floats: rfc8785 writes them
        {"\u00e9": "\U0001f600", "\uffff": 1, "\U00010000": 2},  # UTF-16 key order
    ):
        try:
            expected = bytes(rfc8785.dumps(doc))
        except Exception:  # noqa: BLE001
            continue
        assert canonical_bytes(doc) == expected, doc
