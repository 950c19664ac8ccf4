"""Golden tests of the ``--json`` contract (docs/CLI.md): one scenario, every command.

One module-scoped fixture runs a whole story through the real CLI in subprocesses
(``python -m appliance --home H --json ...``): keys, a trust update, init, bundles
(directory and tar), inspect, import, list, verify, trust show, load, rollback,
history, audit, media, witness reset, demo, and refusals with each exit code
(1, 2, 3 and 4). The tests, parametrized over the recorded steps, check for each:

- the exit code;
- stdout is exactly one JSON object on one line, with ``ok`` of the right value,
  ``error: {code, message}`` and ``exit_code`` (equal to the process's) on failure;
- no traceback on stderr;
- the SHAPE of the object equals ``tests/golden/<name>.json``: every value is
  replaced by its type name (``"str"``, ``"int"``, ``"bool"``, ``"null"``,
  ``"float"``), a list by ``[shape of its first element]`` or ``"<empty list>"``,
  except the stable enum-like fields in ``EXACT_KEYS`` (and ``error.code``), whose
  values are kept.

``UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_json_golden.py`` rewrites the goldens
(review the diff). A missing golden fails the test; it is never written silently.
The fields are documented in ``docs/CLI.md``.
"""

from __future__ import annotations

import difflib
import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conformance.driver import run_appliance

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"

#: Fields whose exact value is part of the contract (enum-like), kept in the shape.
EXACT_KEYS = frozenset({"ok", "exit_code", "status", "type", "outcome", "dry_run", "verified"})
EMPTY_LIST = "<empty list>"

M1 = b"model weights, release 1.0\n" * 3
M2 = b"model weights, release 2.0 (misbehaves)\n" * 3
TOK = b'{"vocab": ["a", "b"]}\n'


# --- the shape of a JSON value ------------------------------------------------------


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    raise TypeError(f"not a JSON value: {value!r}")


def _exact(path: tuple[str, ...]) -> bool:
    return bool(path) and (path[-1] in EXACT_KEYS or path[-2:] == ("error", "code"))


def shape(value: Any, path: tuple[str, ...] = ()) -> Any:
    """Values -> type names, lists -> [shape of the first element]; enum-like values kept."""
    if isinstance(value, dict):
        return {k: shape(v, (*path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0], (*path, "[]"))] if value else EMPTY_LIST
    if _exact(path):
        return value
    return _type_name(value)


def test_shape_normalizes_values_and_keeps_enum_fields() -> None:
    doc = {
        "ok": False,
        "error": {"code": "not_found", "message": "gone"},
        "exit_code": 2,
        "items": [{"status": "new", "size": 3, "sha256": None, "code": "x"}, {"other": 1}],
        "none": [],
        "flag": True,
        "ratio": 0.5,
    }
    assert shape(doc) == {
        "ok": False,
        "error": {"code": "not_found", "message": "str"},
        "exit_code": 2,
        "items": [{"status": "new", "size": "int", "sha256": "null", "code": "str"}],
        "none": EMPTY_LIST,
        "flag": "bool",
        "ratio": "float",
    }


# --- the scenario -------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    """Paths of one scenario run."""

    tmp: Path

    @property
    def home(self) -> Path:
        return self.tmp / "home"

    @property
    def keys(self) -> Path:
        return self.tmp / "keys"

    @property
    def media(self) -> Path:
        return self.tmp / "usb"

    @property
    def witness(self) -> Path:
        return self.tmp / "witness" / "witness.json"

    def key(self, name: str, ext: str) -> str:
        return str(self.keys / f"{name}.{ext}")

    def path(self, name: str) -> str:
        return str(self.tmp / name)


Argv = Callable[[World], list[str]]
Hook = Callable[[World], None]
Filter = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Step:
    id: str
    golden: str
    exit: int
    argv: Argv
    before: Hook | None = None
    filter: Filter | None = None
    home: bool = True  # prefix --home H --json


@dataclass(frozen=True)
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


def _prepare(w: World) -> None:
    w.media.mkdir()
    (w.tmp / "m1.bin").write_bytes(M1)
    (w.tmp / "m2.bin").write_bytes(M2)
    (w.tmp / "tok.json").write_bytes(TOK)


def _tamper_model_1(w: World) -> None:
    """Flip one byte of model@1.0's store object (objects/xx/<blake3>), as an intruder would."""
    objects = [p for p in (w.home / "objects").glob("*/*") if p.is_file()]
    target = next(p for p in objects if p.read_bytes() == M1)
    target.chmod(0o644)
    data = bytearray(target.read_bytes())
    data[0] ^= 0x01
    target.write_bytes(bytes(data))


def _remove_witness(w: World) -> None:
    w.witness.unlink()


def _only_given_media(doc: dict[str, Any]) -> dict[str, Any]:
    """The host's own removable mounts (listed first) are not part of the scenario."""
    media = doc.get("media")
    if isinstance(media, list):
        return {**doc, "media": [m for m in media if m.get("source") == "--media"]}
    return doc


# fmt: off
STEPS: tuple[Step, ...] = (
    Step("version", "version", 0, lambda w: ["--version", "--json"], home=False),
    # connected side: keys, a trust update, bundles
    Step("key_new_root", "key_new", 0, lambda w: ["key", "new", "root", "--out", str(w.keys)]),
    Step("key_new_pub", "key_new", 0, lambda w: ["key", "new", "pub", "--out", str(w.keys)]),
    Step("key_new_rb", "key_new", 0, lambda w: ["key", "new", "rb", "--out", str(w.keys)]),
    Step(
        "trust_update",
        "trust_update",
        0,
        lambda w: [
            "trust", "update", w.path("trust-2.json"), "--version", "2",
            "--key", w.key("root", "key"),
            "--add-key", w.key("pub", "pub"), "--role", "publisher", "--stream", "models",
            "--add-key", w.key("rb", "pub"), "--role", "rollback",
        ],
    ),
    # appliance side
    Step(
        "init",
        "init",
        0,
        lambda w: ["init", "--root-key", w.key("root", "pub"), "--site", "plant-3"],
    ),
    Step("trust_apply", "trust_apply", 0, lambda w: ["trust", "apply", w.path("trust-2.json")]),
    Step(
        "bundle_create_dir",
        "bundle_create_dir",
        0,
        lambda w: [
            "bundle", "create", str(w.media / "bundle-1"), "--stream", "models",
            "--sequence", "1", "--key", w.key("pub", "key"), "--site", "plant-3",
            f"model@1.0={w.path('m1.bin')}", f"tok@1={w.path('tok.json')}",
        ],
    ),
    Step(
        "bundle_create_tar",
        "bundle_create_tar",
        0,
        lambda w: [
            "bundle", "create", str(w.media / "bundle-2.tar"), "--tar", "--stream", "models",
            "--sequence", "2", "--key", w.key("pub", "key"), "--site", "plant-3",
            f"model@2.0={w.path('m2.bin')}",
        ],
    ),
    Step(
        "bundle_inspect",
        "bundle_inspect",
        0,
        lambda w: ["bundle", "inspect", str(w.media / "bundle-1")],
    ),
    Step(
        "bundle_inspect_key",
        "bundle_inspect_key",
        0,
        lambda w: [
            "bundle", "inspect", str(w.media / "bundle-2.tar"), "--key", w.key("pub", "pub"),
        ],
    ),
    Step(
        "import_dry_run",
        "import_dry_run",
        0,
        lambda w: ["import", "--dry-run", str(w.media / "bundle-1")],
    ),
    Step("import_dir", "import", 0, lambda w: ["import", str(w.media / "bundle-1")]),
    Step("import_tar", "import", 0, lambda w: ["import", str(w.media / "bundle-2.tar")]),
    Step("list", "list", 0, lambda w: ["list"]),
    Step("verify", "verify", 0, lambda w: ["verify"]),
    Step("trust_show", "trust_show", 0, lambda w: ["trust", "show"]),
    Step("load", "load", 0, lambda w: ["load", "model", "-o", w.path("model-2.bin")]),
    Step(
        "rollback_authorize",
        "rollback_authorize",
        0,
        lambda w: [
            "rollback", "authorize", w.path("rb-model.json"), "model", "--to", "1.0",
            "--key", w.key("rb", "key"), "--reason", "2.0 misbehaves",
        ],
    ),
    Step(
        "rollback",
        "rollback",
        0,
        lambda w: ["rollback", "model", "--authorization", w.path("rb-model.json")],
    ),
    Step(
        "load_after_rollback", "load", 0, lambda w: ["load", "model", "-o", w.path("model-1.bin")]
    ),
    Step("history", "history", 0, lambda w: ["history", "model"]),
    Step("audit_verify", "audit_verify", 0, lambda w: ["audit", "verify"]),
    Step("audit_show", "audit_show", 0, lambda w: ["audit", "show"]),
    Step("audit_export", "audit_export", 0, lambda w: ["audit", "export"]),
    Step(
        "media",
        "media",
        0,
        lambda w: ["media", "--media", str(w.media)],
        filter=_only_given_media,
    ),
    Step(
        "witness_reset",
        "witness_reset",
        0,
        lambda w: ["--witness", str(w.witness), "witness", "reset", "--reason", "new witness"],
    ),
    Step("demo", "demo", 0, lambda w: ["demo"]),
    # refusals, one or more per exit code
    Step(
        "fail_import_replay",
        "fail_import_replay",
        1,
        lambda w: ["import", str(w.media / "bundle-2.tar")],
    ),
    Step(
        "fail_rollback_reused",
        "fail_rollback_reused",
        1,
        lambda w: ["rollback", "model", "--authorization", w.path("rb-model.json")],
    ),
    Step(
        "fail_load_unknown",
        "fail_load_unknown",
        2,
        lambda w: ["load", "no-such-model", "-o", w.path("x.bin")],
    ),
    Step("fail_load_no_output", "fail_load_no_output", 2, lambda w: ["load", "model"]),
    Step("fail_history_unknown", "fail_history_unknown", 2, lambda w: ["history", "nothing"]),
    Step(
        "fail_init_again",
        "fail_init_again",
        3,
        lambda w: ["init", "--root-key", w.key("root", "pub"), "--site", "plant-3"],
    ),
    Step(
        "fail_import_missing",
        "fail_import_missing",
        3,
        lambda w: ["import", str(w.media / "no-such-bundle")],
    ),
    Step(
        "fail_verify_tampered",
        "fail_verify_tampered",
        4,
        lambda w: ["verify"],
        before=_tamper_model_1,
    ),
    Step(
        "fail_load_tampered",
        "fail_load_tampered",
        4,
        lambda w: ["load", "model@1.0", "-o", w.path("y.bin")],
    ),
    Step(
        "fail_load_witness_missing",
        "fail_load_witness_missing",
        4,
        lambda w: ["load", "tok", "-o", w.path("tok.out")],
        before=_remove_witness,
    ),
)
# fmt: on


def run_cli(argv: list[str], cwd: Path) -> Result:
    proc = run_appliance(*argv, text=True, cwd=cwd, stdin=subprocess.DEVNULL, timeout=60)
    return Result(argv, proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return World(tmp_path_factory.mktemp("json-golden"))


@pytest.fixture(scope="module")
def results(world: World) -> dict[str, Result]:
    """Run the whole scenario once, in order; every step's result, by step id."""
    _prepare(world)
    out: dict[str, Result] = {}
    for step in STEPS:
        if step.before is not None:
            step.before(world)
        prefix = ["--home", str(world.home), "--json"] if step.home else []
        out[step.id] = run_cli([*prefix, *step.argv(world)], world.tmp)
    return out


# --- the checks ---------------------------------------------------------------------


def one_object(res: Result) -> dict[str, Any]:
    """stdout is exactly one JSON object on one line, and nothing else."""
    where = f"appliance {' '.join(res.argv)}\nstdout: {res.stdout!r}\nstderr: {res.stderr}"
    assert res.stdout.endswith("\n") and res.stdout.count("\n") == 1, f"not one line: {where}"
    try:
        doc, end = json.JSONDecoder().raw_decode(res.stdout)
    except json.JSONDecodeError as e:
        raise AssertionError(f"stdout is not JSON ({e}): {where}") from e
    assert res.stdout[end:].strip() == "", f"more than one JSON value on stdout: {where}"
    assert isinstance(doc, dict), f"stdout holds a {type(doc).__name__}, not an object: {where}"
    return doc


_written: dict[str, Any] = {}


def check_golden(name: str, got: Any) -> None:
    path = GOLDEN / f"{name}.json"
    text = json.dumps(got, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    if UPDATE:
        if name in _written and _written[name] != got:
            pytest.fail(f"two steps share golden {name} but their shapes differ")
        _written[name] = got
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    if not path.exists():
        pytest.fail(
            f"golden file {path.relative_to(ROOT)} is missing; create it with "
            f"UPDATE_GOLDEN=1 .venv/bin/pytest {Path(__file__).relative_to(ROOT)} "
            "and review it"
        )
    want = json.loads(path.read_text(encoding="utf-8"))
    if want != got:
        expected = json.dumps(want, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                text.splitlines(keepends=True),
                f"golden/{name}.json",
                "this run",
            )
        )
        pytest.fail(
            f"--json shape changed for golden {name} (update docs/CLI.md and rerun with "
            f"UPDATE_GOLDEN=1 if intended):\n{diff}"
        )


@pytest.mark.parametrize("step", STEPS, ids=[s.id for s in STEPS])
def test_json_contract(step: Step, results: dict[str, Result]) -> None:
    res = results[step.id]
    context = f"appliance {' '.join(res.argv)}\nstdout: {res.stdout}\nstderr: {res.stderr}"
    assert "Traceback" not in res.stderr, context
    assert res.returncode == step.exit, context
    doc = one_object(res)
    assert doc.get("ok") is (step.exit == 0), context
    if step.exit == 0:
        assert "error" not in doc, context
    else:
        error = doc.get("error")
        assert isinstance(error, dict), context
        assert isinstance(error.get("code"), str) and error["code"], context
        assert error["code"].replace("_", "").isalnum() and error["code"].islower(), context
        assert isinstance(error.get("message"), str) and error["message"], context
        assert doc.get("exit_code") == res.returncode, context
    if step.filter is not None:
        doc = step.filter(doc)
    check_golden(step.golden, shape(doc))


def test_every_golden_is_used() -> None:
    """A golden no step produces is stale: a renamed command or a removed step."""
    used = {s.golden for s in STEPS}
    present = {p.stem for p in GOLDEN.glob("*.json")}
    assert present <= used, f"stale goldens: {sorted(present - used)}"


# --- contract violations found while writing this file (see the reasons) -------------


def test_tui_absent_media_is_exit_3(world: World, results: dict[str, Result]) -> None:
    res = run_cli(
        ["--home", str(world.home), "--json", "tui", "--media", str(world.tmp / "no-such-usb")],
        world.tmp,
    )
    doc = one_object(res)
    assert doc["ok"] is False
    assert res.returncode == 3 and doc["exit_code"] == 3, res.stdout


def test_help_under_json_is_one_object(world: World) -> None:
    res = run_cli(["--json", "list", "--help"], world.tmp)
    assert res.returncode == 0
    assert one_object(res)["ok"] is True


def test_key_new_bad_name_is_usage(world: World) -> None:
    res = run_cli(["--json", "key", "new", "bad/name", "--out", str(world.tmp / "k")], world.tmp)
    doc = one_object(res)
    assert doc["ok"] is False
    assert res.returncode == 2 and doc["error"]["code"] == "usage", res.stdout
