"""docs/DEPLOY.md step 3, run as written with a real service user: an import through
``setpriv ... --ambient-caps +linux_immutable`` stores immutable objects, and loads hash
them in place (``immutable_inode``); through ``runuser`` (no capability) every load copies
(``sealed_memfd``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest_load import Site, make_site
from service_world import User, Users, child_env

from appliance.home import Home
from appliance.service.ownership import give_home_to
from appliance.store import clear_immutable, is_immutable

SETPRIV = ["setpriv", "--init-groups", "--inh-caps", "+linux_immutable"]


@pytest.fixture
def served(users: Users) -> Iterator[tuple[Site, User, Path]]:
    if not shutil.which("setpriv") or not shutil.which("runuser"):
        pytest.skip("needs setpriv and runuser (util-linux)")
    base = Path(tempfile.mkdtemp(prefix="appliance-deploy-", dir="/tmp"))
    os.chmod(base, 0o755)
    try:
        site = make_site(base)
        user = users.make("apdep")
        give_home_to(Home(site.home), user.name)
        yield site, user, base
    finally:
        for p in base.rglob("*"):
            if p.is_file() and not p.is_symlink():
                clear_immutable(p)
        shutil.rmtree(base)


def _as(user: User, how: str, site: Site, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "appliance", "--home", str(site.home), *args]
    if how == "setpriv":
        prefix = [*SETPRIV[:1], "--reuid", user.name, "--regid", user.name, *SETPRIV[1:]]
        prefix += ["--ambient-caps", "+linux_immutable"]
    else:
        prefix = ["runuser", "-u", user.name, "--"]
    return subprocess.run(
        [*prefix, *cmd],
        env=child_env(APPLIANCE_IMMUTABLE="1"),  # the product's default (tests turn it off)
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
    )


def _readable(path: Path) -> None:
    for p in [path, *path.rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)


@pytest.mark.parametrize(
    ("how", "copy"), [("setpriv", "immutable_inode"), ("runuser", "sealed_memfd")]
)
def test_the_documented_import_makes_loads_hash_in_place(
    served: tuple[Site, User, Path], how: str, copy: str
) -> None:
    site, user, _ = served
    bundle = site.bundle({"model@1.0": os.urandom(1 << 20)})
    _readable(site.media)
    r = _as(user, how, site, "import", str(bundle))
    assert r.returncode == 0, r.stderr
    [obj] = [p for p in (site.home / "objects").rglob("*") if p.is_file()]
    fd = os.open(obj, os.O_RDONLY)
    try:
        assert is_immutable(fd) is (how == "setpriv")
    finally:
        os.close(fd)
    r = _as(user, "runuser", site, "load", "model", "-o", "/dev/null", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["copy"] == copy
