"""Sharded extraction equals a single process: --shard I/N + merge, torchrun with gloo, a killed shard.

The kill points are exact: the extraction kills itself after N committed batches (FMPROBE_TEST_KILL_AFTER_BATCHES)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fmprobe import extract_features, merge_shards
from fmprobe.datasets import load_dataset
from fmprobe.errors import CacheError
from fmprobe.extract import TEST_KILL_AFTER_BATCHES
from fmprobe.store import plan_batches
from reliability.faults import ROOT, assert_same_file

SPEC = "demo:12"
KW = dict(resolution=32, batch_size=4, num_workers=0, dtype="fp32", progress=False)
BACKBONE = "efficientnet_lite0_imagenet:random"


def test_shards_plus_merge_equal_a_single_process(tmp_path: Path) -> None:
    single = extract_features(SPEC, BACKBONE, out=tmp_path / "single", **KW)
    out = tmp_path / "sharded"
    first = extract_features(SPEC, BACKBONE, out=out, shard="0/3", **KW)
    assert not first.path.exists()
    with pytest.raises(CacheError, match=r"part\(s\) not started.*part1of3"):
        merge_shards(first.path)
    extract_features(SPEC, BACKBONE, out=out, shard="2/3", **KW)
    last = extract_features(SPEC, BACKBONE, out=out, shard="1/3", **KW)  # the last one to finish merges
    assert last.path.exists() and last.key == single.key
    assert sorted(p.name for p in last.path.parent.iterdir()) == [last.path.name]  # parts cleaned up
    assert_same_file(single.path, last.path)
    assert merge_shards(last.path) == last.path  # idempotent


def test_a_killed_shard_resumes_alone_and_merge_waits_for_it(tmp_path: Path) -> None:
    out = tmp_path / "f"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    args = [sys.executable, "-m", "fmprobe", "extract", "-d", "demo:40", "-b", BACKBONE, "--resolution", "64",
            "--batch-size", "4", "--workers", "0", "--dtype", "fp32", "--out", str(out)]  # fmt: skip
    killed = subprocess.run([*args, "--shard", "0/2"], cwd=ROOT, env={**env, TEST_KILL_AFTER_BATCHES: "3"}, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    other = subprocess.run([*args, "--shard", "1/2"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert other.returncode == 0 and "incomplete" in other.stderr and "part0of2" in other.stderr
    cache = Path(other.stdout.strip())
    with pytest.raises(CacheError, match=r"incomplete: .*part0of2\.journal \(\d+ batches to go\)"):
        merge_shards(cache)
    again = subprocess.run([*args, "--shard", "0/2"], cwd=ROOT, env=env, capture_output=True, text=True)
    sizes = {name: len(split) for name, split in load_dataset("demo:40").splits.items()}
    mine = sum(count for _, _, count in plan_batches(sizes, 4, (0, 2)))  # shard 0's images
    assert again.returncode == 0 and f"12/{mine} images already extracted" in again.stderr and cache.exists()
    single = extract_features("demo:40", BACKBONE, out=tmp_path / "single", **{**KW, "resolution": 64})
    assert_same_file(single.path, cache)


def test_torchrun_two_ranks_equal_a_single_process(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29533",
           "-m", "fmprobe", "extract", "-d", SPEC, "-b", BACKBONE, "--resolution", "32", "--batch-size", "4",
           "--workers", "0", "--dtype", "fp32", "-q", "--out", str(tmp_path / "ddp")]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    paths = {Path(line) for line in run.stdout.split() if line.endswith(".h5")}
    assert len(paths) == 1, run.stdout
    # torchrun gives each rank one thread; CPU kernels sum in a thread-count-dependent order, so the reference
    # single process runs with one thread too.
    single_cmd = cmd[:1] + ["-m", "fmprobe", "extract"] + cmd[cmd.index("extract") + 1 : -1] + [str(tmp_path / "single")]
    single = subprocess.run(single_cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    assert_same_file(Path(single.stdout.strip()), paths.pop())
