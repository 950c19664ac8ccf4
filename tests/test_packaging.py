"""The wheel holds every package of the tree: a `pip install .` (not editable) of a site's
host must be able to run every command, `serve` and the model-signature checks included.

The editable install of the Makefile maps the source folders whole, so a package missing
from pyproject.toml would go unseen by every other test; this one builds the wheel.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOP = ("appliance", "bundles", "tui")


def _tree_packages() -> set[str]:
    out = set()
    for top in TOP:
        for init in (ROOT / top).rglob("__init__.py"):
            if "__pycache__" not in init.parts:
                out.add(".".join(init.parent.relative_to(ROOT).parts))
    return out


def test_the_wheel_holds_every_package_and_its_data(tmp_path: Path) -> None:
    # built from a copy: setuptools writes build/lib beside the project it builds
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    shutil.copy(ROOT / "pyproject.toml", src)
    for top in TOP:
        shutil.copytree(ROOT / top, src / top, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "-w",
            str(out),
            str(src),
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    (wheel,) = out.glob("appliance-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    packages = {n.rsplit("/", 1)[0].replace("/", ".") for n in names if n.endswith("/__init__.py")}
    tree = _tree_packages()
    assert {"appliance.service", "appliance.modelsig", "appliance.watch"} <= tree
    assert packages == tree
    # every module of the tree, and the TUI's stylesheets
    for top in TOP:
        for src in (ROOT / top).rglob("*"):
            if src.suffix in (".py", ".tcss") and "__pycache__" not in src.parts:
                assert src.relative_to(ROOT).as_posix() in names
