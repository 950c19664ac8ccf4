"""One class per code, one exit-code source, every code documented in docs/CLI.md."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from appliance import errors
from appliance.errors import ApplianceError, ExitCode, all_error_classes, exit_code_for

REPO = Path(__file__).resolve().parent.parent
SECTION = {
    ExitCode.REJECTED: "### Exit 1",
    ExitCode.USAGE: "### Exit 2",
    ExitCode.OPERATIONAL: "### Exit 3",
    ExitCode.STATE_SUSPECT: "### Exit 4",
}


def _classes() -> list[type[ApplianceError]]:
    todo, seen = [ApplianceError], []
    while todo:
        cls = todo.pop()
        seen.append(cls)
        todo.extend(cls.__subclasses__())
    return seen


def test_one_class_per_code() -> None:
    by_code: dict[str, list[str]] = {}
    for cls in _classes():
        if cls.__module__.startswith(("appliance", "bundles")):
            by_code.setdefault(cls.code, []).append(cls.__qualname__)
    assert {c: n for c, n in by_code.items() if len(n) > 1} == {}


def test_error_classes_live_in_the_two_error_modules() -> None:
    for cls in _classes():
        if cls.__module__.startswith(("appliance", "bundles")):
            assert cls.__module__ in ("appliance.errors", "bundles.errors"), cls


def test_no_code_is_passed_as_a_string() -> None:
    """``SomeError(msg, code="x")`` would let a code and its class disagree."""
    offenders = []
    for path in [
        *REPO.joinpath("appliance").rglob("*.py"),
        *REPO.joinpath("bundles").rglob("*.py"),
    ]:
        for node in ast.walk(ast.parse(path.read_text())):
            func = node.func if isinstance(node, ast.Call) else None
            name = getattr(func, "id", getattr(func, "attr", ""))
            if name.endswith("Error") and any(k.arg == "code" for k in node.keywords):  # type: ignore[union-attr]
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []


def test_exit_code_comes_from_the_class() -> None:
    for cls in _classes():
        assert exit_code_for(cls("x")) == cls.exit_code
    assert exit_code_for(ValueError("bug")) == ExitCode.OPERATIONAL
    assert errors.NotABundleError("x").exit_code == ExitCode.USAGE
    assert errors.MediaChangedError("x").exit_code == ExitCode.OPERATIONAL


def test_every_code_is_documented_under_its_exit_code() -> None:
    doc = (REPO / "docs" / "CLI.md").read_text()
    table = doc[doc.index("## All error codes") :]
    sections = {
        code: table[table.index(head) : table.index("\n### ", table.index(head) + 5)]
        if "\n### " in table[table.index(head) + 5 :]
        else table[table.index(head) :]
        for code, head in SECTION.items()
    }
    missing = []
    for code, cls in all_error_classes().items():
        if code == "error":
            continue
        if not re.search(rf"\| `{re.escape(code)}` \|", sections[ExitCode(cls.exit_code)]):
            missing.append((code, int(cls.exit_code)))
    assert missing == []
