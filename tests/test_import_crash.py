"""SIGKILL real ``appliance import`` processes at random moments; state is old or new.

A corpus of four bundles moves a home through states S0 -> S1 -> S2 -> S3 -> S4:
one ~32 MiB artifact (kills land mid-hash and mid-write), a multi-artifact tar,
a directory with a split artifact that also carries a trust update, and a tiny
tar. Each unkilled import is timed first; then imports are killed after a
random delay drawn from [0, that duration]. After every kill: ``verify`` and
``audit verify`` pass (exit 0), ``list`` equals exactly the before- or the
after-state, the trust version is the old or the new one, and staging
leftovers are gone once the next command that takes the lock has run.
A kill that left the old state is retried; after S4 the home is reset from
S0 with ``cp -a``.
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from conformance.driver import (
    Json,
    cli_argv,
    cli_env,
    copy_home,
    object_files,
    pack_tar,
    run_in_process,
    run_many,
    stable_list,
    staging_files,
)
from import_env import Env

from bundles.documents import AddKey

KILLS = 110
MAX_STUCK = 12
SEED = int(os.environ.get("CRASH_SEED", "20261126"))


@dataclass(frozen=True)
class Step:
    bundle: Path
    duration: float  # seconds of an unkilled import, process start-up included
    before: list[Json]
    after: list[Json]
    trust_before: int
    trust_after: int


def _import(home: Path, bundle: Path) -> tuple[int, float]:
    t0 = time.monotonic()
    proc = subprocess.run(
        cli_argv(home, "import", bundle), capture_output=True, env=cli_env(), check=False
    )
    return proc.returncode, time.monotonic() - t0


def _state(home: Path) -> tuple[list[Json], int]:
    (lrc, listing), (trc, trust) = run_many(home, [["list"], ["trust", "show"]])
    assert lrc == 0 and trc == 0
    return stable_list(listing), int(trust["trust_version"])


def _copy_home(src: Path, dst: Path) -> None:
    copy_home(src, dst)


def _corpus(env: Env) -> list[Path]:
    spare = env.new_key("spare-rollback")
    trust = env.trust_update([AddKey(spare.public, "rollback", None)])
    big = env.bundle({"weights@1": os.urandom(32 << 20)}, sequence=1)
    multi = env.bundle(
        {
            "tokenizer@1": os.urandom(2 << 20),
            "config@1": os.urandom(1 << 20),
            "vocab@1": os.urandom(256 << 10),
            "merges@1": os.urandom(64 << 10),
            "readme@1": os.urandom(4096),
            "tag@1": b"v1",
        },
        sequence=2,
    )
    multi_tar = pack_tar(env.path("multi.tar"), multi)
    split = env.bundle(
        {"weights@2": os.urandom(8 << 20), "config@2": os.urandom(300_000), "notes@1": b"n" * 99},
        sequence=3,
        part_size=3 << 20,
        trust_updates=[trust],
    )
    tiny = env.bundle({"tag@2": b"v2"}, sequence=4, tar=True)
    return [big, multi_tar, split, tiny]


@pytest.mark.slow
def test_sigkill_during_import_leaves_old_or_new_state(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    env = Env(tmp_path / "env", streams=("models", "probe"))
    bundles = _corpus(env)
    probe = env.bundle({"probe@1": b"probe"}, stream="probe", sequence=1)
    base = tmp_path / "base-home"
    _copy_home(env.home, base)

    # Reference passes: every step unkilled, timed (the longer of two runs: the machine
    # may be busy), with its before and after state.
    durations: list[list[float]] = [[] for _ in bundles]
    states: list[tuple[list[Json], int]] = []
    for run in range(2):
        ref = tmp_path / f"ref-home-{run}"
        _copy_home(base, ref)
        states = [_state(ref)]
        for i, bundle in enumerate(bundles):
            rc, duration = _import(ref, bundle)
            assert rc == 0, bundle
            durations[i].append(duration)
            states.append(_state(ref))
            assert states[-1] != states[-2]
    steps = [
        Step(
            bundle,
            max(durations[i]),
            states[i][0],
            states[i + 1][0],
            states[i][1],
            states[i + 1][1],
        )
        for i, bundle in enumerate(bundles)
    ]

    home = tmp_path / "home"
    _copy_home(base, home)
    state = 0
    outcomes: Counter[str] = Counter()
    per_step: Counter[int] = Counter()
    started = time.monotonic()
    kills = 0
    durations = [s.duration for s in steps]
    stuck = 0  # kills in a row that left the old state at this step
    while kills < KILLS:
        step = steps[state]
        # After MAX_STUCK old outcomes in a row the import runs unkilled, so every step
        # of the corpus gets its share of kills even when the machine is slow to start.
        delay = rng.uniform(0.0, durations[state]) if stuck < MAX_STUCK else None
        objects_before = len(object_files(home))
        t0 = time.monotonic()
        proc = subprocess.Popen(
            cli_argv(home, "import", step.bundle),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=cli_env(),
        )
        finished = False
        try:
            rc = proc.wait(timeout=delay)
            finished = True
            # Keep the upper bound of the delays at the longest unkilled import seen.
            durations[state] = max(durations[state], time.monotonic() - t0)
            outcomes["finished before the kill"] += 1
            assert rc == 0, f"unkilled import of step {state + 1} failed with {rc}"
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            kills += 1
            per_step[state + 1] += 1
        leftovers = staging_files(home)
        objects = len(object_files(home))
        # The checks run the CLI entry point in this process (no start-up cost per check).
        vrc, verify = run_in_process(home, "verify")
        arc, chain = run_in_process(home, "audit", "verify")
        lrc, listing_doc = run_in_process(home, "list")
        trc, trust_doc = run_in_process(home, "trust", "show")
        at = "no kill" if delay is None else f"kill {kills} at {delay:.3f}s"
        where = f"{at} into step {state + 1} (seed {SEED})"
        assert vrc == 0, (where, verify)
        assert arc == 0, (where, chain)
        assert lrc == 0 and trc == 0, where
        listing = stable_list(listing_doc)
        assert listing in (step.before, step.after), where
        assert trust_doc["trust_version"] in (step.trust_before, step.trust_after), where
        new = listing == step.after
        if new:
            assert trust_doc["trust_version"] == step.trust_after, where
        outcomes["new" if new else "old"] += 1
        if delay is not None and not finished:
            outcomes["killed: new state" if new else "killed: old state"] += 1
        stuck = 0 if new else stuck + 1
        if leftovers:
            outcomes["killed while staging (leftovers seen)"] += 1
            # The next command that takes the lock cleans them (a dry run changes nothing).
            rc_probe, probe_doc = run_in_process(home, "import", "--dry-run", probe)
            assert rc_probe == 0, (where, probe_doc)
            assert staging_files(home) == [], where
        if not new and objects > objects_before:
            # Promoted but not referenced: killed between promotion and the commit.
            outcomes["killed after promotion, before the commit"] += 1
        if new:
            state += 1
            if state == len(steps):
                _copy_home(base, home)
                outcomes["resets"] += 1
                state = 0
    elapsed = time.monotonic() - started
    summary = {
        "kills": kills,
        **outcomes,
        "kills per step": dict(sorted(per_step.items())),
        "unkilled durations": [round(d, 3) for d in durations],
        "seconds": round(elapsed, 1),
    }
    print(f"\ncrash test summary: {summary}")
    assert outcomes["old"] > 0 and outcomes["new"] > 0, summary
    assert all(per_step[i] > 0 for i in range(1, len(steps) + 1)), summary
