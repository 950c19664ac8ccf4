"""Cancel counts at any moment before promotion, including after every byte is staged."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from import_env import Env

import appliance.importer as importer
from appliance.errors import CancelledError
from appliance.home import Home


def test_cancel_after_staging_finished_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = Env(tmp_path / "site")
    bundle = env.bundle({"model@1": b"m" * 300_000, "tok@1": b"t" * 1000}, sequence=1)
    before = env.snapshot()
    cancel = threading.Event()
    real = importer.stage_artifact
    done: list[str] = []
    lock = threading.Lock()

    def stage_then_cancel(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        with lock:
            done.append(args[1].name)
            if len(done) == 2:
                cancel.set()  # every artifact hashed and staged; nothing promoted yet
        return result

    monkeypatch.setattr(importer, "stage_artifact", stage_then_cancel)
    with pytest.raises(CancelledError) as exc:
        importer.import_bundle(Home(env.home), bundle, cancel=cancel)
    assert exc.value.code == "cancelled"
    assert env.snapshot().store_part() == before.store_part()
    assert not any((env.home / "staging").iterdir())
    monkeypatch.undo()
    env.import_ok(bundle)  # the same bundle still imports afterwards
