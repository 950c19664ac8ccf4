"""The operator's and the script's CLI (issue 16): usage, help, several bundles, progress,
quiet, colour, completion, signals, the TUI without a terminal. Black-box, through the
real CLI, on the conformance simulator's site (tests/conformance/driver.py)."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from conformance.driver import (
    Site,
    assert_unchanged,
    build_site,
    cli,
    cli_argv,
    cli_env,
    copy_home,
    new_events,
    ok,
    snapshot,
    staging_files,
)

from bundles.timeutil import utcnow


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    return build_site(tmp_path_factory.mktemp("ux-site"))


@pytest.fixture
def home(site: Site, tmp_path: Path) -> Path:
    return copy_home(site.home, tmp_path / "home")


def run(
    *args: str | Path, env: dict[str, str] | None = None, **kw: object
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "appliance", *map(str, args)],
        capture_output=True,
        text=True,
        env=env or cli_env(),
        timeout=60,
        check=False,
        **kw,  # type: ignore[arg-type]
    )


# --- usage and help ------------------------------------------------------------------------


def test_no_argument_prints_a_clean_usage_line() -> None:
    p = run()
    assert p.returncode == 2
    lines = p.stderr.splitlines()
    assert lines[0].startswith("usage: appliance ")
    assert lines[-1] == "appliance: error [usage]: a command is required (see 'appliance --help')"
    assert "error [usage]: appliance:" not in p.stderr
    j = run("--json")
    assert j.returncode == 2 and json.loads(j.stdout)["error"]["code"] == "usage"


def test_a_bad_option_names_the_command_and_its_help() -> None:
    p = run("import", "--frobnicate")
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr  # one clear line (the command's usage is in its --help)
    assert lines[0].startswith("appliance: error [usage]: ")
    assert "see 'appliance import --help'" in p.stderr


def test_exec_help_shows_braces_and_dashdash() -> None:
    p = run("exec", "--help")
    assert p.returncode == 0
    assert "-- CMD" in p.stdout and "{}" in p.stdout and "/dev/fd/N" in p.stdout


def test_trust_update_help_explains_every_operation() -> None:
    p = run("trust", "update", "--help")
    assert p.returncode == 0
    text = " ".join(p.stdout.split())
    for option in ("--add-key", "--role", "--stream", "--revoke", "--threshold", "--rotate-root"):
        line = [w for w in p.stdout.splitlines() if w.strip().startswith(option)]
        assert line, option
    assert "bind to the --add-key before them" in text


def test_completion_bash_completes_commands_and_options(tmp_path: Path) -> None:
    p = run("completion", "bash")
    assert p.returncode == 0
    script = tmp_path / "c.sh"
    script.write_text(p.stdout)
    probe = (
        f"source {script}; COMP_WORDS=(appliance trust update --ro); COMP_CWORD=3; "
        '_appliance; echo "${COMPREPLY[@]}"; COMP_WORDS=(appliance imp); COMP_CWORD=1; '
        '_appliance; echo "${COMPREPLY[@]}"'
    )
    out = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True)
    first, second = out.stdout.splitlines()
    assert set(first.split()) == {"--role", "--root-threshold", "--rotate-root"}
    assert second.split() == ["import"]


def test_tui_without_a_terminal_is_a_usage_error(home: Path) -> None:
    argv = cli_argv(home, "tui")
    p = subprocess.run(
        argv, stdin=subprocess.DEVNULL, capture_output=True, env=cli_env(), timeout=30, check=False
    )
    assert p.returncode == 2, p
    assert json.loads(p.stdout)["error"]["code"] == "usage"
    assert b"needs a terminal" in p.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["list"],
        ["verify"],
        ["load", "m", "-o", "/dev/null"],
        ["audit", "verify"],
        ["history", "m"],
        ["trust", "show"],
    ],
    ids=" ".join,
)
def test_a_home_that_is_a_file_is_an_io_error_not_a_bug(argv: list[str], tmp_path: Path) -> None:
    """``--home`` naming a file (or a path through one) is one line, ``io_error``, exit 3
    (it was ``internal_error``: NotADirectoryError reading ``HOME/appliance.db``)."""
    plain = tmp_path / "plain"
    plain.write_bytes(b"not a home")
    for home in (plain, plain / "below"):
        p = run("--home", home, "--json", *argv)
        assert p.returncode == 3, p.stderr
        error = json.loads(p.stdout)["error"]
        assert error["code"] == "io_error", error
        assert "is not a directory" in error["message"]
        assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, p.stderr
    assert plain.read_bytes() == b"not a home"


@pytest.mark.parametrize(
    "argv",
    [
        ["--home", "", "init", "--root-key", "r.pub"],
        ["--witness", "", "list"],
        ["--anchor", "", "list"],
        ["list", "--home="],
        ["key", "new", "k", "--out", ""],
        ["load", "m", "-o", ""],
        ["trust", "apply", ""],
    ],
    ids=" ".join,
)
def test_an_empty_path_is_a_usage_error_never_the_current_folder(
    argv: list[str], tmp_path: Path
) -> None:
    """``--home "$UNSET"`` in a script: ``Path("")`` is the current folder, which would
    have been initialised as a home (or searched for one, or given the keys)."""
    p = run("--json", *argv, cwd=tmp_path)
    assert p.returncode == 2, p.stderr
    error = json.loads(p.stdout)["error"]
    assert error["code"] == "usage" and "an empty path" in error["message"], error
    assert list(tmp_path.iterdir()) == []  # nothing made in the current folder


_UNWRITABLE = {"full": ">/dev/full", "closed": ">&-"}


@pytest.mark.parametrize("stdout", sorted(_UNWRITABLE))
@pytest.mark.parametrize(
    "argv",
    [
        ["--version"],
        ["--version", "--json"],
        ["list"],
        ["--json", "list"],
        ["list", "--help"],
        ["history", "m"],
        ["verify", "m"],
        ["trust", "show"],
        ["audit", "export"],
        ["load", "m"],
        ["completion", "bash"],
    ],
    ids=" ".join,
)
def test_an_output_that_cannot_be_written_is_exit_3_not_a_bug(
    home: Path, argv: list[str], stdout: str
) -> None:
    """A full disk behind ``>`` or a stdout closed at start: one line, operational_error,
    exit 3 (they were internal_error or a traceback, or exit 0 with the output lost)."""
    if argv[0] != "--version":
        argv = ["--home", str(home), *argv]
    p = subprocess.run(
        ["sh", "-c", f'exec "$@" {_UNWRITABLE[stdout]}', "sh", sys.executable, "-m", "appliance"]
        + argv,
        capture_output=False,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
        timeout=60,
        check=False,
    )
    assert p.returncode == 3, p.stderr
    assert "Traceback" not in p.stderr, p.stderr
    last = p.stderr.splitlines()[-1]
    assert last.startswith("appliance: error [operational_error]: cannot write to stdout: "), last


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["--json", "list"], 0),
        (["--json", "verify", "m"], 0),
        (["--json", "watch", "--once"], 0),
        (["--json", "history", "nosuch"], 2),
        (["--json", "list", "--frobnicate"], 2),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else str(v),
)
def test_with_stderr_closed_stdout_holds_only_the_json(
    home: Path, argv: list[str], code: int
) -> None:
    """Human text and the error line go to stderr; with stderr closed they go nowhere
    (``print`` to a closed stderr wrote them to stdout, before the one JSON object)."""
    p = subprocess.run(
        ["sh", "-c", 'exec "$@" 2>&-', "sh", sys.executable, "-m", "appliance"]
        + ["--home", str(home), *argv],
        stdout=subprocess.PIPE,
        text=True,
        env=cli_env(),
        timeout=60,
        check=False,
    )
    assert p.returncode == code, p.stdout
    assert p.stdout.count("\n") == 1, p.stdout
    assert json.loads(p.stdout)["ok"] is (code == 0)


# --- several bundles ---------------------------------------------------------------------


def test_import_several_paths_in_stream_and_sequence_order(site: Site, home: Path) -> None:
    repo = site.repo
    b4 = repo.bundle({"m@4.0": b"four" * 100}, sequence=4)
    b3 = repo.bundle({"m@3.0": b"three" * 100}, sequence=3)
    o2 = repo.bundle({"o@2.0": b"other two" * 100}, stream="other", sequence=2, signers=("other",))
    doc = ok(cli(home, "import", b4.path, o2.path, b3.path))
    assert [(r["stream"], r["sequence"]) for r in doc["imports"]] == [
        ("models", 3),
        ("models", 4),
        ("other", 2),
    ]
    assert all(r["ok"] for r in doc["imports"]) and (doc["imported"], doc["refused"]) == (3, 0)
    listing = ok(cli(home, "list"))
    assert any((a["name"], a["version"]) == ("m", "4.0") for a in listing["artifacts"])


def test_one_path_keeps_the_single_bundle_json_shape(site: Site, home: Path) -> None:
    b3 = site.repo.bundle({"m@3.0": b"three" * 100}, sequence=3)
    doc = ok(cli(home, "import", "--dry-run", b3.path))
    assert "imports" not in doc and doc["path"] == str(b3.path) and doc["sequence"] == 3


def test_several_paths_each_with_its_own_result(site: Site, home: Path) -> None:
    repo = site.repo
    good = repo.bundle({"m@3.0": b"three" * 100}, sequence=3)
    elsewhere = repo.bundle({"m@4.0": b"four" * 100}, sequence=4, sites=("site-b",))
    r = cli(home, "import", good.path, elsewhere.path)
    assert (r.rc, r.code) == (1, "wrong_site"), str(r)
    results = r.out["imports"]
    assert [x["ok"] for x in results] == [True, False]
    assert results[1]["error"]["code"] == "wrong_site" and results[1]["exit_code"] == 1
    assert (r.out["imported"], r.out["refused"]) == (1, 1)


def test_import_new_takes_only_the_new_bundles_on_the_media(
    site: Site, home: Path, tmp_path: Path
) -> None:
    stick = tmp_path / "stick"
    stick.mkdir()
    repo = site.repo
    old = site.bundles["models2"].path  # already imported
    os.rename(repo.bundle({"m@3.0": b"three" * 100}, sequence=3).path, stick / "models-3")
    expired = repo.bundle(
        {"o@2.0": b"x" * 100},
        stream="other",
        sequence=2,
        signers=("other",),
        issued_at=utcnow() - timedelta(days=3),
        expires=utcnow() - timedelta(days=1),
    )
    os.rename(expired.path, stick / "other-2")
    subprocess.run(["cp", "-a", str(old), str(stick / "models-2")], check=True)
    doc = ok(cli(home, "import", "--new", "--media", stick))
    assert [r["path"] for r in doc["imports"]] == [str(stick / "models-3")]
    again = ok(cli(home, "import", "--new", "--media", stick))
    assert again["imports"] == []


def test_paths_and_new_together_is_a_usage_error(home: Path, tmp_path: Path) -> None:
    r = cli(home, "import", "--new", tmp_path)
    assert (r.rc, r.code) == (2, "usage")
    r = cli(home, "import")
    assert (r.rc, r.code) == (2, "usage")


# --- progress, quiet, colour -------------------------------------------------------------


def test_progress_json_lines_on_stderr(site: Site, home: Path) -> None:
    b3 = site.repo.bundle({"m@3.0": os.urandom(3 << 20), "tok@2.0": b"t" * 1000}, sequence=3)
    r = cli(home, "import", "--progress", "json", b3.path)
    assert r.rc == 0, str(r)
    lines = [json.loads(line) for line in r.stderr.splitlines()]
    assert lines and all(set(x) == {"progress"} for x in lines)
    ends = {
        x["progress"]["artifact"] for x in lines if x["progress"]["done"] == x["progress"]["size"]
    }
    assert ends == {"m", "tok"}


def test_quiet_prints_nothing_on_success(site: Site, home: Path) -> None:
    b3 = site.repo.bundle({"m@3.0": b"three" * 100}, sequence=3)
    p = run("--home", home, "import", "--quiet", b3.path)
    assert p.returncode == 0 and p.stdout == "" and p.stderr == ""


def _on_a_pty(args: list[str], env: dict[str, str]) -> bytes:
    main, sub = pty.openpty()
    proc = subprocess.Popen(args, stdout=sub, stderr=sub, stdin=subprocess.DEVNULL, env=env)
    os.close(sub)
    out = b""
    while True:
        ready, _, _ = select.select([main], [], [], 30)
        if not ready:
            break
        try:
            chunk = os.read(main, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    proc.wait(timeout=30)
    os.close(main)
    return out


def test_colour_on_a_terminal_and_never_under_no_color(site: Site, home: Path) -> None:
    b3 = site.repo.bundle({"m@3.0": b"three" * 100}, sequence=3)
    argv = [*cli_argv(home, "import", "--dry-run", b3.path)]
    argv.remove("--json")
    env = {**cli_env(), "TERM": "xterm"}
    env.pop("NO_COLOR", None)
    assert b"\x1b[32m" in _on_a_pty(argv, env)
    assert b"\x1b[" not in _on_a_pty(argv, {**env, "NO_COLOR": "1"})
    p = run("--home", home, "import", "--dry-run", b3.path, env=env)  # not a terminal
    assert p.returncode == 0 and "\x1b" not in p.stdout + p.stderr


# --- signals ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big(site: Site) -> Path:
    return site.repo.bundle({"m@3.0": b"large model " * (32 << 20)}, sequence=3).path  # 384 MiB


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_signal_during_import_is_interrupted_and_leaves_nothing(
    sig: signal.Signals, big: Path, home: Path
) -> None:
    before = snapshot(home)
    argv = cli_argv(home, "import", "--progress", "json", big)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env())
    assert proc.stderr is not None
    first = proc.stderr.readline()  # the first progress line: staging has begun
    assert b'"progress"' in first, first
    proc.send_signal(sig)
    out, _err = proc.communicate(timeout=60)
    assert proc.returncode == 3, (out, _err)
    doc = json.loads(out)
    assert doc["error"]["code"] == "interrupted" and sig.name in doc["error"]["message"]
    assert staging_files(home) == []  # no multi-hundred-MB staging file left behind
    after = snapshot(home)
    assert_unchanged(before, after)
    assert new_events(before, after) == []
