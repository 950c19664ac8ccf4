"""Name, identifier and path rules (bundles.names)."""

from __future__ import annotations

import pytest

from bundles.errors import BadNameError, DuplicateNameError, PathTooLongError, UnsafePathError
from bundles.names import (
    MAX_NAME_CHARS,
    MAX_PATH_BYTES,
    check_artifact_name,
    check_identifier,
    check_relative_path,
    check_unique,
    fold,
)


@pytest.mark.parametrize("ok", ["a", "v1.0.0", "1.0+build.5", "rc-1_2", "A" * MAX_NAME_CHARS])
def test_identifiers_ok(ok: str) -> None:
    assert check_identifier(ok, "version") == ok


@pytest.mark.parametrize(
    "bad", ["", ".hidden", "-x", "a b", "a/b", "é", "a\n", "A" * (MAX_NAME_CHARS + 1), 5, None]
)
def test_identifiers_bad(bad: object) -> None:
    with pytest.raises(BadNameError) as info:
        check_identifier(bad, "version")
    assert info.value.code == "bad_name"


@pytest.mark.parametrize("ok", ["model", "org/model", "a.b-c_d/e1"])
def test_artifact_names_ok(ok: str) -> None:
    assert check_artifact_name(ok) == ok


@pytest.mark.parametrize(
    "bad", ["", "/abs", "a/../b", "..", "a//b", "a/", "a/.b", "a b", "a+b", "x\x00", "ß"]
)
def test_artifact_names_bad(bad: str) -> None:
    with pytest.raises(BadNameError):
        check_artifact_name(bad)


@pytest.mark.parametrize(
    "ok", ["a", "artifacts/x/1.0/model.bin", "dir/caf\u00e9", "sp ace/x", "a/b.c/..d"]
)
def test_paths_ok(ok: str) -> None:
    assert check_relative_path(ok) == ok


@pytest.mark.parametrize(
    ("bad", "cls", "code"),
    [
        ("/abs", UnsafePathError, "unsafe_path"),
        ("//abs", UnsafePathError, "unsafe_path"),
        ("..", UnsafePathError, "unsafe_path"),
        ("a/../b", UnsafePathError, "unsafe_path"),
        ("a/..", UnsafePathError, "unsafe_path"),
        ("a\\b", UnsafePathError, "unsafe_path"),
        ("a//b", UnsafePathError, "unsafe_path"),
        ("a/", UnsafePathError, "unsafe_path"),
        ("./a", UnsafePathError, "unsafe_path"),
        ("", BadNameError, "bad_name"),
        ("a\x7fb", BadNameError, "bad_name"),
        ("a\tb", BadNameError, "bad_name"),
        ("a\u200bb", BadNameError, "bad_name"),  # zero-width space (Cf)
        ("a\u2029b", BadNameError, "bad_name"),  # paragraph separator
        ("a\udcffb", BadNameError, "bad_name"),  # an undecodable byte (surrogateescape)
        ("cafe\u0301", BadNameError, "bad_name"),  # NFD
        ("x" * (MAX_PATH_BYTES + 1), PathTooLongError, "path_too_long"),
        ("\u00e9" * (MAX_PATH_BYTES // 2 + 1), PathTooLongError, "path_too_long"),  # bytes count
    ],
)
def test_paths_bad(bad: str, cls: type[Exception], code: str) -> None:
    with pytest.raises(cls) as info:
        check_relative_path(bad)
    assert getattr(info.value, "code", None) == code


def test_path_of_exactly_1024_bytes_is_fine() -> None:
    assert check_relative_path("x" * MAX_PATH_BYTES)


def test_fold_catches_case_and_compatibility_look_alikes() -> None:
    assert fold("Model") == fold("model") == fold("MODEL")
    assert fold("\ufb01le") == fold("file")  # ligature
    assert fold("\uff41") == fold("a")  # fullwidth
    assert fold("Stra\u00dfe") == fold("strasse")


def test_check_unique() -> None:
    check_unique(["a", "b", "c"], "name")
    with pytest.raises(DuplicateNameError) as info:
        check_unique(["Model", "x", "model"], "name")
    assert info.value.code == "duplicate_name"
    assert "'model'" in info.value.message and "'Model'" in info.value.message
