"""Concurrent writers of every shared file, and what killed writers leave behind.

Each test is deterministic: a child process is stopped at an exact point (a file barrier it waits on, or a
SIGKILL it sends itself from inside the call it is at), and the other side acts only once it has seen the child
get there (the barrier file, or the "waiting for pid" line a blocked process writes)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from fmprobe import extract_features
from fmprobe._io import _owner, atomic_write_text, exclusive
from fmprobe.errors import CacheError
from fmprobe.store import FeatureFile
from reliability.faults import ROOT, assert_same_file

BACKBONE = "efficientnet_lite0_imagenet:random"
KW = dict(resolution=32, batch_size=4, num_workers=0, dtype="fp32", progress=False)
CLI = ["-d", "demo:10", "-b", BACKBONE, "--resolution", "32", "--batch-size", "4", "--workers", "0", "--dtype", "fp32"]  # no -q: the log is read


def _env() -> dict[str, str]:
    """The children's environment, read when they start (conftest points FMPROBE_DATA at the session's folder)."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


# A child that runs `fmprobe extract` with one function wrapped: it stops at a barrier (touches <dir>/reached,
# waits for <dir>/go) or SIGKILLs itself when the wrapped call happens (optionally only for a matching path).
CHILD = textwrap.dedent(
    """
    import importlib, os, signal, sys, time
    from pathlib import Path
    module_name, attr, action, barrier, match = sys.argv[1:6]
    del sys.argv[1:6]
    owner = importlib.import_module(module_name)
    *parents, attr = attr.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    real = getattr(owner, attr)

    def wrapped(*args, **kwargs):
        if match and not any(str(a).endswith(match) for a in args):
            return real(*args, **kwargs)
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        Path(barrier, "reached").touch()
        while not Path(barrier, "go").exists():
            time.sleep(0.01)
        return real(*args, **kwargs)

    setattr(owner, attr, wrapped)
    sys.argv[0] = "fmprobe"
    from fmprobe.cli import main
    main()
    """
)


def _child(target: str, action: str, barrier: Path, out: Path, *extra: str, match: str = "") -> subprocess.Popen:
    module_name, attr = target.split(":")
    args = [sys.executable, "-c", CHILD, module_name, attr, action, str(barrier), match, "extract", *CLI, "--out", str(out), *extra]
    return subprocess.Popen(args, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_barrier(child: subprocess.Popen, barrier: Path) -> None:
    """Until the child touched <barrier>/reached (it then waits there); fails if the child ended instead."""
    while not (barrier / "reached").exists():
        assert child.poll() is None, f"the child ended before the barrier: {child.communicate()}"
        time.sleep(0.02)


def _release(child: subprocess.Popen, barrier: Path) -> tuple[str, str]:
    (barrier / "go").touch()
    out, err = child.communicate(timeout=300)
    assert child.returncode == 0, err
    return out, err


def _stderr_until(process: subprocess.Popen, text: str) -> str:
    """Read the process's stderr line by line until ``text`` appears (or it ends: then ``text`` is not there)."""
    seen = ""
    for line in process.stderr:  # type: ignore[union-attr]
        seen += line
        if text in line:
            return seen
    return seen


def test_a_process_that_waited_for_the_lock_ends_in_a_cache_hit(tmp_path: Path) -> None:
    """The first extraction stops right before its journal -> HDF5 merge; the second, started then, must wait for
    the lock and find the finished file (it used to wake in between, start a new journal and recompute)."""
    barrier, out = tmp_path / "barrier", tmp_path / "f"
    barrier.mkdir()
    first = _child("fmprobe.extract:_assemble", "pause", barrier, out)
    try:
        _wait_for_barrier(first, barrier)
        second = subprocess.Popen([sys.executable, "-m", "fmprobe", "extract", *CLI, "--out", str(out)], cwd=ROOT, env=_env(),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        assert "waiting for pid" in _stderr_until(second, "waiting for pid"), "the second process must wait for the lock"
        first_out, _ = _release(first, barrier)
        second_out, second_err = second.communicate(timeout=300)
    finally:
        (barrier / "go").touch()
        first.kill() if first.poll() is None else None
    assert second.returncode == 0 and "cache hit" in second_err and "extracting" not in second_err, second_err
    assert first_out == second_out and Path(first_out.strip()).is_file()
    assert sorted(p.name for p in Path(first_out.strip()).parent.iterdir()) == [Path(first_out.strip()).name]  # nothing left


@pytest.mark.parametrize(
    ("target", "match", "left"),
    [
        ("os:replace", ".h5", "a complete .h5 temporary, never renamed"),
        ("pathlib:Path.unlink", ".journal", "the full journal, after the rename"),
    ],
)
def test_leftovers_of_a_kill_are_removed_by_the_next_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], target: str, match: str, left: str
) -> None:
    out = tmp_path / "f"
    killed = _child(target, "kill", tmp_path, out, match=match)
    killed.communicate(timeout=300)
    assert killed.returncode == -9
    folder = next(out.iterdir())
    before = sorted(p.name for p in folder.iterdir())
    assert len(before) >= 3, before  # journal and lock (and the temporary or the finished file): left by the kill
    capsys.readouterr()
    done = extract_features("demo:10", BACKBONE, out=out, **KW)
    err = capsys.readouterr().err
    assert "removed" in err and "killed" in err, err
    assert sorted(p.name for p in folder.iterdir()) == [done.path.name], left
    assert done.cache_hit == (match == ".journal")
    assert_same_file(done.path, extract_features("demo:10", BACKBONE, out=tmp_path / "clean", **KW).path)


def test_atomic_write_temporaries_carry_the_pid_and_a_dead_writers_are_removed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """What every atomic write leaves after a kill (split files, reports, memos): removed by the next write."""
    code = (
        "import os, signal, sys; from pathlib import Path; from fmprobe._io import atomic_write\n"
        "def write(tmp):\n    tmp.write_text('half'); os.kill(os.getpid(), signal.SIGKILL)\n"
        "atomic_write(Path(sys.argv[1]), write)"
    )
    target = tmp_path / "train.fmprobe_split.csv"
    killed = subprocess.run([sys.executable, "-c", code, str(target)], cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    (leftover,) = tmp_path.glob(".*.tmp")
    assert ".pid" in leftover.name and not target.exists()
    host = _owner().split("@")[1]
    others = [tmp_path / f".{target.name}.pid{os.getpid()}@{host}.00.tmp", tmp_path / f".{target.name}.pid999999999@elsewhere.00.tmp"]
    for other in others:  # a live writer's, and one of another machine sharing the folder: never touched
        other.write_text("in use")
    atomic_write_text(target, "done")
    assert target.read_text() == "done" and sorted(tmp_path.glob(".*.tmp")) == sorted(others)
    assert "removed 1 leftover temporary file(s) of killed fmprobe processes" in capsys.readouterr().err


def test_a_full_disk_while_taking_the_lock_is_a_named_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fmprobe._io as io_module

    def full(*args: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(io_module.os, "pwrite", full)
    with pytest.raises(CacheError, match=r"x\.lock: cannot write the lock file \(No space left on device\)\. Free space"):
        with exclusive(tmp_path / "x.lock"):
            pass
    monkeypatch.undo()
    with exclusive(tmp_path / "x.lock", wait=False):  # the failed attempt released it
        pass


def test_concurrent_pixel_cache_writers_never_corrupt_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The first writer stops just before finishing the pixel cache; a second extraction sharing it meanwhile
    must leave it alone (it used to truncate it: all-zero images behind a complete marker)."""
    barrier, out = tmp_path / "barrier", tmp_path / "f"
    barrier.mkdir()
    first = _child("fmprobe.store.pixels:PixelCache.finish", "pause", barrier, out, "--pixel-cache")
    try:
        _wait_for_barrier(first, barrier)
        second = extract_features("demo:10", BACKBONE, out=out, pixel_cache=True, feature_dtype="float32", **KW)
        assert "another process is writing" in capsys.readouterr().err
        decoded = tmp_path / "decoded.h5"
        decoded.write_bytes(second.path.read_bytes())
        first_out, _ = _release(first, barrier)
    finally:
        (barrier / "go").touch()
        first.kill() if first.poll() is None else None
    again = extract_features("demo:10", BACKBONE, out=out, pixel_cache=True, feature_dtype="float32", force=True, **KW)
    assert "pixel cache: reading" in capsys.readouterr().err
    assert_same_file(again.path, decoded)  # read from the first writer's cache == decoded by the second itself
    assert not list((out / ".pixels").rglob("*.tmp")) and not list((out / ".pixels").rglob("*.lock"))
    assert FeatureFile(Path(first_out.strip())).load("train").features.shape[0] > 0


MEMO_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from fmprobe.extract import _remember_dtype
    out, who = Path(sys.argv[1]), sys.argv[2]
    for i in range(40):
        _remember_dtype(out, f"{who}-{i}", {"dtype": "fp32", "seconds": {"fp32": 0.1}})
    """
)


def test_concurrent_dtype_memo_writers_keep_every_entry(tmp_path: Path) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", MEMO_WRITER, str(tmp_path), who], cwd=ROOT, env=_env(), stderr=subprocess.PIPE, text=True) for who in "ab"]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()  # type: ignore[union-attr]
    memo = json.loads((tmp_path / ".fmprobe-dtype.json").read_text())
    assert sorted(memo) == sorted(f"{w}-{i}" for w in "ab" for i in range(40))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".fmprobe-dtype.json"]


RESULTS_WRITER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[3])
    from test_results import _row
    from fmprobe.results import append_rows, compact_results
    folder, who = sys.argv[1], int(sys.argv[2])
    for i in range(15):
        append_rows(folder, [_row(m, 0.5 + 0.01 * i, seed=who * 100 + i) for m in ("roc_auc", "accuracy")])
        if i % 4 == 3:
            compact_results(folder)
    """
)


def test_concurrent_results_writers_lose_no_row(tmp_path: Path) -> None:
    from fmprobe.results import compact_results, read_results

    tests = str(Path(__file__).resolve().parents[1])
    procs = [
        subprocess.Popen([sys.executable, "-c", RESULTS_WRITER, str(tmp_path), str(who), tests], cwd=ROOT, env=_env(), stderr=subprocess.PIPE, text=True)
        for who in (1, 2)
    ]  # fmt: skip
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()  # type: ignore[union-attr]
    pending = read_results(tmp_path)
    compact_results(tmp_path)
    table = read_results(tmp_path)
    assert len(table) == 2 * 15 * 2 and table["cell_id"].nunique() == 30
    assert np.array_equal(np.sort(table["value"].to_numpy()), np.sort(pending["value"].to_numpy()))
