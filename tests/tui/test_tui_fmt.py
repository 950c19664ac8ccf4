"""``tui.fmt``'s event rows: every field, nothing cut, nothing sent to the terminal raw."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tui import fmt


@pytest.fixture
def ascii_mode() -> Iterator[None]:
    fmt.choose({"APPLIANCE_ASCII": "1"})
    try:
        yield
    finally:
        fmt.choose({"APPLIANCE_ASCII": "0"})


EVENT = {
    "seq": 9,
    "ts": "2026-03-02T09:30:00Z",
    "type": "import",
    "outcome": "rejected",
    "code": "wrong_site",
    "name": None,
    "version": None,
    "detail": {"message": "x" * 5000, "artifacts": [{"name": "a"}], "path": None},
}


def test_event_fields_hold_every_field_whole() -> None:
    rows = fmt.event_fields(EVENT)
    assert [label for label, _ in rows] == [
        "seq",
        "ts",
        "type",
        "outcome",
        "code",
        "detail.artifacts",
        "detail.message",
        "detail.path",
    ]
    assert dict(rows)["detail.message"] == "x" * 5000  # not cut: the pane wraps and scrolls
    assert dict(rows)["detail.path"] == "null"  # a null inside detail is still a field
    first = fmt.event_fields(EVENT, detail_first=True)
    inner = ["detail.artifacts", "detail.message", "detail.path"]
    assert [label for label, _ in first][:3] == inner
    assert sorted(first) == sorted(rows)


def test_values_escape_control_characters() -> None:
    assert fmt.value("evil\x1b[2Jname\n") == "evil\\x1b[2Jname\\n"
    assert fmt.value({"k": "\x07"}) == '{"k": "\\u0007"}'  # JSON's own escape
    assert fmt.value("modèle") == "modèle"


def test_values_are_ascii_in_the_ascii_mode(ascii_mode: None) -> None:
    assert fmt.value("modèle ✓") == "mod\\xe8le \\u2713"
    assert fmt.value(["é"]) == '["\\xe9"]'
