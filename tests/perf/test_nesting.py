"""The nesting check without a Python loop per byte gives the byte counter's verdict."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bundles.canonical import check_nesting, parse_json
from bundles.errors import NestingTooDeepError


def _reference(data: bytes, limit: int) -> bool:
    """The former byte-by-byte counter: True when within ``limit``."""
    depth, in_string, escape = 0, False, False
    for byte in data:
        if in_string:
            if escape:
                escape = False
            elif byte == 0x5C:
                escape = True
            elif byte == 0x22:
                in_string = False
            continue
        if byte == 0x22:
            in_string = True
        elif byte in (0x7B, 0x5B):
            depth += 1
            if depth > limit:
                return False
        elif byte in (0x7D, 0x5D):
            depth -= 1
    return True


def _ours(data: bytes, limit: int) -> bool:
    try:
        check_nesting(data, limit)
    except NestingTooDeepError:
        return False
    return True


_text = st.text(alphabet=st.sampled_from('ab[]{}"\\\n\u00e9'), max_size=6)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=40,
)


@settings(max_examples=400, deadline=None)
@given(_json, st.integers(min_value=0, max_value=8), st.booleans())
def test_same_verdict_as_the_byte_counter_on_json(doc: object, limit: int, ascii: bool) -> None:
    data = json.dumps(doc, ensure_ascii=ascii).encode()
    assert _ours(data, limit) == _reference(data, limit), data


@pytest.mark.parametrize(
    ("data", "limit", "ok"),
    [
        (b"[" * 33 + b"]" * 33, 32, False),
        (b"[" * 32 + b"]" * 32, 32, True),
        (b'["' + b"[" * 100 + b'"]', 2, True),  # brackets in a string do not count
        (b'["\\"' + b"[" * 100 + b'"]', 2, True),  # an escaped quote does not end it
        (b'["\\\\"' + b",[" * 5 + b"]" * 5 + b"]", 3, False),  # an escaped backslash does
        (b'{"a":{"b":{"c":[1]}}}', 4, True),
        (b'{"a":{"b":{"c":[1]}}}', 3, False),
        (b'[[["unterminated [[[[[[', 3, True),
    ],
    ids=range(8),
)
def test_cases(data: bytes, limit: int, ok: bool) -> None:
    assert _ours(data, limit) is ok
    assert _reference(data, limit) is ok


@pytest.mark.parametrize(
    "data",
    [b"[" * 40 + b"]" * 40, b"[" * 1_000_000, b"[" * 1_000_000 + b"]"],
    ids=["deep", "endless-open", "endless-open-one-close"],
)
def test_parse_json_refuses_deep_documents_with_the_code(data: bytes) -> None:
    """Unclosed brackets pass the byte check (malformed, not deep) and are refused by the
    parser with the same code (its recursion limit), never a crash."""
    with pytest.raises(NestingTooDeepError) as exc:
        parse_json(data)
    assert exc.value.code == "nesting_too_deep"
