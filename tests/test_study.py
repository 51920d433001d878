"""`fmprobe study`: grid expansion, validation, dry-run cost, resume after a kill, quick.toml end to end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from _helpers import shared_file

import fmprobe.extract
from fmprobe.errors import FmprobeError, UnknownNameError
from fmprobe.finetune import FinetuneError, Recipe
from fmprobe.study import estimate_cost, format_plan, load_study, run_study

ROOT = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(body)
    return path


GRID = """
name = "t"
datasets = ["demo:10", "data/m.csv"]
backbones = ["efficientnet_lite0_imagenet", "efficientnet_lite0_imagenet:random", "vit_tiny_patch16_224:random"]
readouts = ["pooled", "cls", "mean_patch"]
resolutions = [32, 64]
probes = ["logreg", "lgbm"]
train_fractions = [0.1, 1.0]
repeats = 3
"""


def test_grid_expansion_and_paths(tmp_path: Path) -> None:
    study = load_study(_write(tmp_path, GRID))
    jobs = study.extraction_jobs()
    assert len(jobs) == 2 * 3 * 2
    assert {j[3] for j in jobs} == {("pooled",), ("cls", "mean_patch")}  # each backbone gets the readouts it has
    assert jobs[0][0] == "demo:10" and jobs[-1][0] == str(tmp_path / "data" / "m.csv")  # relative to the study file
    # per readout: logreg -> fraction 0.1 x 3 repeats + 1.0 once; lgbm (stochastic) -> 3 + 3
    assert study.probe_cells() == (2 * 2 * 1 + 2 * 2 * 1 + 2 * 2 * 2) * (3 + 1 + 3 + 3)
    assert study.out == Path("runs") / "t"


@pytest.mark.parametrize(
    "body, error, message",
    [
        ('datasets = ["demo"]\nbackbones = ["resnet5O"]', UnknownNameError, "Closest"),
        ('datasets = ["demo"]\nbackbones = ["resnet18"]\nprobes = ["svm"]', UnknownNameError, "unknown probe 'svm'"),
        ('datasets = []\nbackbones = ["resnet18"]', FmprobeError, "'datasets' must list"),
        ('datasets = ["demo"]\nbackbones = ["resnet18"]\ncolour = 1', FmprobeError, r"unknown key\(s\) \['colour'\]"),
        ('datasets = ["demo"]\nbackbones = ["resnet18"]\nbaseline = "resnet50"', FmprobeError, "baseline 'resnet50'"),
        ('datasets = ["demo"\n', FmprobeError, "not valid TOML"),
        ('datasets = ["demo"]\nbackbones = ["resnet18"]\nbootstrp = 10', FmprobeError, "'bootstrp' -> 'bootstrap'"),
        ('datasets = ["demo"]\nbackbones = ["resnet18"]\n[finetune]\nsettings = ["linear"]\nepoch = 3', FmprobeError,
         r"unknown key\(s\) \['epoch'\] in \[finetune\]; closest: 'epoch' -> 'epochs'"),
        ('datasets = ["demo"]\nbackbones = ["resnet18"]\n[finetune]\nsettings = ["linear"]\nlr = -1.0', FinetuneError, "--lr -1.0"),
        ('datasets = ["demo"]\nbackbones = ["resnet18"]\n[finetune]\nsettings = ["linear"]\nepochs = "ten"', FmprobeError, "wrong type"),
        ('datasets = ["demo"]\nbackbones = ["resnet18"]\n[finetune]\nsettings = ["linear"]\nresolution = 64', FmprobeError,
         r"unknown key\(s\) \['resolution'\]"),  # the study's own 'resolutions' decide it
    ],
)
def test_bad_study_files_are_named(tmp_path: Path, body: str, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        load_study(_write(tmp_path, body))


def test_dry_run_prints_grid_and_cost_without_running(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study = load_study(_write(tmp_path, 'datasets = ["demo:10"]\nbackbones = ["efficientnet_lite0_imagenet", "vit_tiny_patch16_224:random"]\nresolutions = [64]'))
    costs = estimate_cost(study)
    assert [c.images for c in costs] == [40, 40] and all(c.seconds and c.seconds > 0 for c in costs)
    assert all(c.source == "estimated" for c in costs)
    plan = format_plan(study, costs)
    assert "2 backbone(s)" in plan and "80 image-forwards" in plan
    run = run_study(study.path, out=tmp_path / "out", dry_run=True)
    assert not (tmp_path / "out").exists() and run.report is None and run.feature_files == ()
    assert "image-forwards" in capsys.readouterr().err  # the plan is a diagnostic: stderr, never stdout


def test_finetune_table_splits_into_recipe_and_run_options(tmp_path: Path) -> None:
    body = 'datasets = ["demo"]\nbackbones = ["resnet18"]\n[finetune]\nsettings = ["linear", "full"]\nepochs = 2\nworkers = 0\n'
    grid = load_study(_write(tmp_path, body)).finetune
    assert grid.settings == ("linear", "full") and grid.recipe == {"epochs": 2} and grid.options == {"workers": 0}
    assert Recipe(setting="full", **grid.recipe).epochs == 2  # the recipe keywords are exactly Recipe fields


def test_old_keyword_names_still_work_with_a_deprecation_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from fmprobe import ExtractOptions, ProbeGrid, RunOptions

    with pytest.warns(DeprecationWarning, match=r"num_workers= is deprecated; use workers="):
        assert ExtractOptions(num_workers=2, batch_size=4).workers == 2
    with pytest.warns(DeprecationWarning, match=r"max_images_per_split= is deprecated; use max_images="):
        assert RunOptions(max_images_per_split=8).max_images == 8
    with pytest.warns(DeprecationWarning, match=r"n_resamples= is deprecated; use n_bootstrap="):
        assert ProbeGrid(probes=["logreg"], n_resamples=7).n_bootstrap == 7
    with pytest.raises(TypeError, match="give workers= only"):
        ExtractOptions(num_workers=1, workers=2)
    body = ('datasets = ["demo"]\nbackbones = ["resnet18"]\n[extract]\nnum_workers = 0\n'
            '[finetune]\nsettings = ["linear"]\nn_resamples = 5\n')  # fmt: skip
    with pytest.warns(DeprecationWarning):
        study = load_study(_write(tmp_path, body))
    assert study.extract == {"workers": 0}
    assert study.finetune.options == {"n_bootstrap": 5}
    assert "num_workers is now workers" in caplog.text  # a CLI user sees it (DeprecationWarnings are hidden there)


def test_relative_paths_follow_the_dataset_registry(tmp_path: Path) -> None:
    body = ('datasets = ["data/x.npz", "folder:imgs?task=binary", "demo:10", "medmnist:breastmnist@64"]\n'
            'backbones = ["resnet18"]\n')  # fmt: skip
    study = load_study(_write(tmp_path, body))
    assert study.datasets == (str(tmp_path / "data" / "x.npz"), f"folder:{tmp_path / 'imgs'}?task=binary",
                              "demo:10", "medmnist:breastmnist@64")  # fmt: skip


@pytest.mark.parametrize("name", ["paper", "medmnist", "quick"])
def test_shipped_studies_validate(name: str) -> None:
    study = load_study(ROOT / "studies" / f"{name}.toml")
    assert study.extraction_jobs() and study.probe_cells() > 0
    if name != "quick":
        assert "dinov2_vitb14" in study.backbones and study.baseline == "deit_base_imagenet"


KILL_HOOK = fmprobe.extract.TEST_KILL_AFTER_BATCHES  # the extraction's exact-kill test hook


def test_killed_study_resumes_without_recomputing(tmp_path: Path) -> None:
    body = ('datasets = ["demo:25"]\nbackbones = ["efficientnet_lite0_imagenet:random", "resnet18:random"]\n'
            'resolutions = [48]\nprobes = ["logreg", "knn"]\nbootstrap = 100\n[extract]\nworkers = 0\nbatch_size = 8\n')  # fmt: skip
    path = _write(tmp_path, body)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "fmprobe", "study", str(path), "--out", str(out)]  # no -q: its log is checked
    env = {**os.environ, "FMPROBE_DATA": str(tmp_path / "data")}
    killed = subprocess.run(cmd, cwd=ROOT, env={**env, KILL_HOOK: "3"}, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr  # killed after the 3rd batch of the first extraction
    assert not list(out.rglob("*.h5")) and list(out.rglob("*.journal"))
    rerun = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming" in rerun.stderr, rerun.stderr
    finished = list(out.rglob("*.h5"))
    mtimes = {p: p.stat().st_mtime_ns for p in finished}
    df = pd.read_csv(out / "results" / "results.csv")
    assert df[df.is_primary].groupby("backbone").size().to_dict() == {"efficientnet_lite0_imagenet": 2, "resnet18": 2}
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert "cache hit" in again.stderr and "4 of 4 cells already" in again.stderr, again.stderr
    assert len(finished) == 2 and all(p.stat().st_mtime_ns == t for p, t in mtimes.items())  # nothing recomputed


def test_quick_study_end_to_end_on_the_real_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"  # where medmnist: specs look ($FMPROBE_DATA): the official files, by their names
    data.mkdir()
    for name in ("pneumoniamnist.npz", "breastmnist.npz"):
        (data / name).symlink_to(shared_file(name))
    monkeypatch.setenv("FMPROBE_DATA", str(data))
    run = run_study(ROOT / "studies" / "quick.toml", out=tmp_path, max_images=40, progress=False)
    assert run.report is not None and run.report.html == tmp_path / "report" / "report.html"
    html = run.report.html.read_text()
    assert "pneumoniamnist" in html and "breastmnist" in html
    df = pd.read_csv(tmp_path / "results" / "results.csv")
    names = set(df.dataset)  # the flag, and the variant: a subset
    assert {n.rsplit("-", 1)[0] for n in names} == {"pneumoniamnist[max_images_per_split=40]", "breastmnist[max_images_per_split=40]"}
    assert set(df[df.is_primary].metric) == {"roc_auc"}
    assert len(df[df.is_primary]) == 2 * 2 * 3 and run.study.baseline == "efficientnet_lite0_imagenet"


def test_init_writes_a_template_that_loads_and_refuses_to_overwrite(tmp_path: Path) -> None:
    from fmprobe.study import init_study

    path = init_study(tmp_path / "my.toml")
    study = load_study(path)
    assert study.datasets == ("demo:150",) and study.baseline in study.backbones
    assert sum(line.lstrip().startswith("#") for line in path.read_text().splitlines()) > 20  # commented
    with pytest.raises(FmprobeError, match="exists"):
        init_study(path)


def test_keep_going_runs_past_a_failed_job_and_lists_it(tmp_path: Path) -> None:
    body = ('datasets = ["demo:20", "csv:absent.csv"]\nbackbones = ["resnet18:random"]\nresolutions = [32]\n'
            'probes = ["logreg"]\nbootstrap = 20\n[extract]\nnum_workers = 0\n')  # fmt: skip
    path = _write(tmp_path, body)
    with pytest.raises(FmprobeError, match="absent.csv"):
        run_study(path, out=tmp_path / "stop", progress=False)
    run = run_study(path, out=tmp_path / "go", progress=False, keep_going=True)
    assert len(run.failures) == 1 and "absent.csv" in run.failures[0] and run.failures[0].startswith("extract csv:")
    assert run.report is not None and run.report.html.exists()
    assert len(run.feature_files) == 1


def test_dry_run_lists_missing_data_and_weights_with_the_fix_and_a_real_run_refuses_first(tmp_path: Path) -> None:
    body = ('datasets = ["demo:20", "csv:absent.csv"]\nbackbones = ["dinov2_vitb14", "resnet18:random", "efficientnet_lite0_imagenet"]\n'
            '[weights]\nvit_small_imagenet = "nope.pth"\n')  # fmt: skip
    path = _write(tmp_path, body)
    run = run_study(path, out=tmp_path / "o", dry_run=True, progress=False)
    found = {m.what: m for m in run.missing}
    assert set(found) == {"dataset csv:" + str((tmp_path / "absent.csv").resolve()), "weights of dinov2_vitb14"}
    assert "under [weights] in" in found["weights of dinov2_vitb14"].fix
    with pytest.raises(FmprobeError, match="2 thing\\(s\\) this study needs are missing \\(nothing was run\\)"):
        run_study(path, out=tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()
