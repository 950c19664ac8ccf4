"""Fixtures of the loader-service tests (helpers in ``service_world``)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from service_world import Users, World, make_world


@pytest.fixture
def users() -> Iterator[Users]:
    if os.geteuid() != 0:
        pytest.skip("needs root to create users (CI runs as root)")
    u = Users()
    try:
        yield u
    finally:
        u.remove_all()


@pytest.fixture
def world(users: Users) -> Iterator[World]:
    """A home owned by a throwaway service user; ``world.start()`` runs the service as it."""
    tmp = Path(tempfile.mkdtemp(prefix="appliance-svc-", dir="/tmp"))
    w = make_world(tmp, users.make("apsvc"))
    try:
        yield w
    finally:
        if w.proc is not None:
            w.proc.kill()
            w.proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def root_world(tmp_path: Path) -> Iterator[World]:
    """The same site, served by this process's user (protocol tests need no other uid)."""
    w = make_world(tmp_path, None)
    try:
        yield w
    finally:
        if w.proc is not None:
            w.proc.kill()
            w.proc.wait()
