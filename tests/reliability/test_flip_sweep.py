"""Single-byte flips anywhere in a finished feature file, metadata included: each is refused on open with a named
CacheError and the --force fix, or provably harmless (identical arrays and attributes). Never a traceback, a crash,
a hang or a silently changed result. The sweep runs in child processes, so a segfault or a hang is counted, not
fatal. It flips every 97th byte: 60 of those positions by default, all of them with FMPROBE_FAULT_TRIALS >= 20."""

from __future__ import annotations

import ast
import collections
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fmprobe import extract_features
from reliability.faults import HANG_S, ROOT, TRIALS, flip, outcome, snapshot

BACKBONE = "efficientnet_lite0_imagenet:random"
KW = dict(resolution=32, batch_size=4, num_workers=0, dtype="fp32", progress=False)
STRIDE = 97
DEFAULT_TRIALS = 60


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small cache written by the real pipeline (all the attributes extraction records)."""
    return extract_features("demo:10", BACKBONE, out=tmp_path_factory.mktemp("sweep"), **KW).path


@pytest.fixture(scope="module")
def unsealed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same cache written as fmprobe did before seals (what existing caches on disk look like)."""
    from fmprobe.store import features

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(features, "WRITE_SEALED", False)
        return extract_features("demo:10", BACKBONE, out=tmp_path_factory.mktemp("unsealed"), **KW).path


def trials_every(size: int, stride: int, count: int | None) -> list[tuple[int, int]]:
    """Seeded ``(offset, xor)`` flips at every ``stride``-th byte, thinned evenly to ``count`` when given."""
    offsets = list(range(0, size, stride))
    if count is not None:
        offsets = offsets[:: max(1, len(offsets) // count)][:count]
    rng = random.Random(97)
    return [(offset, rng.randint(1, 255)) for offset in offsets]


def sweep(cache: Path, trials: list[tuple[int, int]], log: Path) -> dict[tuple[int, int], str]:
    """Run ``trials`` in child processes; a child that dies or hangs marks its trial and the rest go on in a new one."""
    outcomes: dict[tuple[int, int], str] = {}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    while todo := [t for t in trials if t not in outcomes]:
        child = subprocess.run(
            [sys.executable, str(ROOT / "tests/reliability/faults.py"), str(cache), str(log), *(f"{o}:{x}" for o, x in todo)],
            env=env, capture_output=True, text=True, timeout=HANG_S * len(todo) + 120,
        )  # fmt: skip
        started: tuple[int, int] | None = None
        for line in log.read_text().splitlines():
            word, offset, xor, *rest = line.split(" ", 3)
            trial = (int(offset), int(xor))
            if word == "start":
                started = trial
            else:
                outcomes[trial], started = ast.literal_eval(rest[0]), None
        if child.returncode != 0:
            assert started is not None, child.stderr  # the worker itself failed before any trial
            outcomes[started] = "hang" if child.returncode == -14 else f"crash: exit {child.returncode}"  # 14: SIGALRM
    return outcomes


def test_every_97th_byte_flipped_is_refused_or_harmless(cache: Path, tmp_path: Path) -> None:
    size = cache.stat().st_size
    trials = trials_every(size, STRIDE, None if TRIALS >= 20 else DEFAULT_TRIALS)
    outcomes = sweep(cache, trials, tmp_path / "sweep.log")
    counts = collections.Counter(o.split(":")[0] for o in outcomes.values())
    print(f"flip sweep: file {size} bytes, {len(trials)} cases: {dict(counts)}")  # the battery's numbers (pytest -s)
    bad = {t: o for t, o in outcomes.items() if o not in ("refused", "harmless")}
    assert not bad, f"{len(bad)} of {len(trials)} flips not refused or harmless: {list(bad.items())[:5]}"
    assert len(outcomes) == len(trials)


def test_unsealed_files_flipped_end_in_a_named_error_never_a_crash_or_hang(unsealed: Path, tmp_path: Path) -> None:
    """Caches written before seals: each open parses in a child process with a timeout first. Their attributes
    outside the fingerprint carry no checksum, so a flip there can pass (counted as silent, not asserted); what is
    asserted is no traceback, crash or hang. 6 trials by default (each starts a process), every 4th position of the
    97-byte sweep with FMPROBE_FAULT_TRIALS >= 20."""
    size = unsealed.stat().st_size
    trials = trials_every(size, STRIDE * (4 if TRIALS >= 20 else 1), None if TRIALS >= 20 else 6)
    outcomes = sweep(unsealed, trials, tmp_path / "sweep.log")
    counts = collections.Counter(o.split(":")[0] for o in outcomes.values())
    print(f"unsealed flip sweep: file {size} bytes, {len(trials)} cases: {dict(counts)}")
    bad = {t: o for t, o in outcomes.items() if o not in ("refused", "harmless", "silent")}
    assert not bad, f"{len(bad)} of {len(trials)} flips crashed, hung or raised: {list(bad.items())[:5]}"


@settings(max_examples=25 * TRIALS, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(where=st.floats(min_value=0, max_value=1, exclude_max=True), xor=st.integers(min_value=1, max_value=255))
def test_property_any_byte_flipped_anywhere_is_refused_or_harmless(cache: Path, tmp_path_factory: pytest.TempPathFactory, where: float, xor: int) -> None:
    """Property-based over the whole file (user block, superblock, object headers, heaps, attributes, chunks)."""
    data = cache.read_bytes()
    damaged = tmp_path_factory.mktemp("flip") / cache.name
    damaged.write_bytes(flip(data, int(where * len(data)), xor))
    assert outcome(damaged, snapshot(cache)) in ("refused", "harmless")
