"""A disk error while the staging file is hashed back is an operational error, nothing promoted."""

from __future__ import annotations

import errno
import os
import types
from pathlib import Path
from typing import Any

import pytest
from import_env import Env

import appliance.staging as staging
from appliance.home import Home
from appliance.importer import import_bundle
from bundles.errors import OperationalError


class _FailingPreadv(types.SimpleNamespace):
    """``os`` for the staging module, except that ``preadv`` fails like a dying disk."""

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    @staticmethod
    def preadv(fd: int, buffers: list[memoryview], offset: int) -> int:
        raise OSError(errno.EIO, os.strerror(errno.EIO))


def test_staging_read_back_error_is_io_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = Env(tmp_path / "site")
    # bigger than staging.SMALL: read back by the hashing thread
    bundle = env.bundle({"model@1": b"m" * (staging.SMALL + 100_000)}, sequence=1)
    before = env.snapshot()
    monkeypatch.setattr(staging, "os", _FailingPreadv())
    with pytest.raises(OperationalError) as exc:
        import_bundle(Home(env.home), bundle)
    assert exc.value.code == "io_error"
    monkeypatch.undo()
    assert env.snapshot().store_part() == before.store_part()
    assert not any((env.home / "staging").iterdir())
