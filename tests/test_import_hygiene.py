"""Non-TUI code never imports textual, and no code imports sqlite-utils or NumPy
(start-up time: docs/BINARY.md, docs/PERFORMANCE.md).

``python -X importtime`` cannot be used inside the frozen binary, so the rule is
checked here on the Python entry: each core module (``appliance.*``,
``bundles.*``) is imported in a fresh interpreter, and a few CLI runs
(``--version``, ``key new``, every command's ``--help`` but ``tui``'s) happen in
a fresh interpreter; afterwards neither ``textual`` nor ``tui`` may be in
``sys.modules``. Neither may ``sqlite_utils`` (the product talks to SQLite through
``appliance.db.Database``; the library's import, with click, dateutil and pluggy, cost
about 36 ms of CPU at every start) nor ``numpy``; real ``load``, ``verify``,
``import``, ``list`` and ``audit verify`` runs check that too.
"""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import appliance
import bundles

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = ("textual", "tui", "sqlite_utils", "numpy")

# Printed by every probe: the forbidden modules that got imported.
_REPORT = """
import json, sys
bad = sorted(m for m in sys.modules if m.split(".")[0] in {forbidden!r})
print("HYGIENE " + json.dumps(bad))
"""


def _core_modules() -> list[str]:
    names = []
    for package in (appliance, bundles):
        names.append(package.__name__)
        for info in pkgutil.walk_packages(package.__path__, prefix=package.__name__ + "."):
            names.append(info.name)
    return sorted(set(names))


def _probe(code: str, tmp_path: Path) -> list[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("APPLIANCE_") or k in ("APPLIANCE_ANCHOR_DIR", "APPLIANCE_IMMUTABLE")
    }
    env["APPLIANCE_HOME"] = str(tmp_path / "home")
    full = code + _REPORT.format(forbidden=set(FORBIDDEN))
    proc = subprocess.run(
        [sys.executable, "-c", full],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("HYGIENE ")]
    assert lines, f"probe did not finish (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    result: list[str] = json.loads(lines[-1].removeprefix("HYGIENE "))
    return result


@pytest.mark.parametrize("module", _core_modules())
def test_core_module_does_not_import_textual(module: str, tmp_path: Path) -> None:
    assert _probe(f"import {module}\n", tmp_path) == []


def _cli(argv: list[str]) -> str:
    return (
        "from appliance.cli import main\n"
        "try:\n"
        f"    code = main({argv!r})\n"
        "except SystemExit as e:\n"
        "    code = e.code\n"
        "print('EXIT', code)\n"
    )


def test_version_does_not_import_textual(tmp_path: Path) -> None:
    assert _probe(_cli(["--version"]), tmp_path) == []


def test_key_new_does_not_import_textual(tmp_path: Path) -> None:
    argv = ["key", "new", "hygiene", "--out", str(tmp_path / "keys")]
    assert _probe(_cli(argv), tmp_path) == []
    assert (tmp_path / "keys" / "hygiene.key").exists()


def _commands() -> list[str]:
    from appliance.cli import build_parser

    parser = build_parser()
    subs = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    choices: dict[str, object] = subs.choices  # type: ignore[assignment]
    return sorted(name for name in choices if name != "tui")


@pytest.mark.parametrize("command", _commands())
def test_command_help_does_not_import_textual(command: str, tmp_path: Path) -> None:
    assert _probe(_cli([command, "--help"]), tmp_path) == []


def test_probe_sees_textual(tmp_path: Path) -> None:
    """The probe itself works: an import of textual is seen."""
    assert "textual" in _probe("import textual.app\n", tmp_path)


def test_commands_on_a_real_home_import_neither_sqlite_utils_nor_numpy(tmp_path: Path) -> None:
    from conftest_load import make_site

    site = make_site(tmp_path / "site", witness=True)
    bundle = site.bundle({"model@1.0": b"weights"})
    home = ["--home", str(site.home), "--witness", str(site.witness)]
    runs = [
        ["import", str(bundle)],  # (exec: the same path as load, then execve)
        ["load", "model", "-o", str(tmp_path / "out")],
        ["verify"],
        ["audit", "verify"],
        ["list"],
    ]
    for argv in runs:
        code = _cli([*home, *argv]) + "assert code == 0, code\n"  # else no report: fails
        assert _probe(code, tmp_path) == [], argv
    assert (tmp_path / "out").read_bytes() == b"weights"


def test_command_name_skips_global_options() -> None:
    from appliance.cli.main import GROUPS, command_name

    assert command_name(["--home", "list", "--json", "verify", "x"]) == "verify"
    assert command_name(["--witness", "w", "import", "p"]) == "import"
    assert command_name(["--home=/h", "list"]) == "list"
    assert command_name(["--json"]) is None
    assert set(GROUPS) >= {"key", "bundle", "import", "load", "exec", "rollback", "tui"}


def test_public_api_resolves_without_textual() -> None:
    code = (
        "import appliance, sys\n"
        "for n in appliance.__all__: getattr(appliance, n)\n"
        "assert 'textual' not in sys.modules, 'textual imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
