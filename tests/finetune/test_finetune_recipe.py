"""fmprobe/finetune/recipe.py and options.py: settings, choices as enums or strings, the one copy of the
defaults, the schedule, and the split of flat keywords into Recipe and RunOptions."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from fmprobe.finetune import (
    Balance,
    ComputeDtype,
    FinetuneError,
    Head,
    Recipe,
    RunOptions,
    Schedule,
    parse_setting,
    recipe_and_options,
)
from fmprobe.finetune.recipe import lr_factor


def test_settings_recipe_and_schedule() -> None:
    assert parse_setting("partial:3") == ("partial", 3) and parse_setting("FULL") == ("full", 0)
    for bad, message in [("partial:0", "K must be at least 1"), ("lora", "unknown --setting 'lora'")]:
        with pytest.raises(FinetuneError, match=message):
            parse_setting(bad)
    with pytest.raises(FinetuneError, match="--balance 'x': use one of none, loss, sampler"):
        Recipe(balance="x")
    with pytest.raises(FinetuneError, match="--schedule 'linear': use constant or cosine"):
        Recipe(schedule="linear")
    r = Recipe("partial:2", epochs=100)
    assert (
        r.probe_name == "finetune:partial:2"
        and Recipe("attention", head="deit").probe_name == "finetune:attention-deit"
    )
    assert r.warmup_steps(10) == 50 and Recipe(epochs=4).warmup_steps(10) == 20  # 5 epochs, at most half the run
    assert [lr_factor(s, 100, 4, "constant") for s in (0, 3, 50)] == [0.25, 1.0, 1.0]
    assert lr_factor(99, 100, 0, "cosine") < 0.01 and lr_factor(0, 100, 0, "cosine") == 1.0


def test_strings_and_enums_make_the_same_recipe() -> None:
    plain = Recipe(schedule="cosine", balance="loss", head="deit")
    assert plain == Recipe(schedule=Schedule.cosine, balance=Balance.loss, head=Head.deit)
    assert plain.schedule is Schedule.cosine
    assert '"schedule": "cosine"' in plain.to_json() and plain.to_dict()["head"] == "deit"  # plain values in the key
    assert RunOptions(dtype="bf16").dtype is ComputeDtype.bf16 and RunOptions(device="cuda:1").device == "cuda:1"
    with pytest.raises(FinetuneError, match="--dtype 'fp8'"):
        RunOptions(dtype="fp8")


def test_recipe_and_options_split_flat_keywords() -> None:
    recipe, options = recipe_and_options({"setting": "full", "epochs": 3, "workers": 0, "out": "x"})
    assert recipe == Recipe("full", epochs=3) and options == RunOptions(workers=0, out=Path("x"))
    with pytest.raises(FinetuneError, match=r"unknown fine-tuning key\(s\) \['epoch'\]"):
        recipe_and_options({"epoch": 3})


def test_records_import_without_torch() -> None:
    import subprocess

    code = "import sys, fmprobe.finetune as f; f.Recipe(); f.RunOptions(); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_run_options_take_cuda_n_and_refuse_unknown_devices() -> None:
    from fmprobe.errors import FmprobeError
    from fmprobe.finetune import RunOptions

    assert RunOptions(device="cuda:1").device == "cuda:1" and RunOptions().device == "auto"
    with pytest.raises(FmprobeError, match="--device 'gpu': use auto, cpu, cuda or cuda:N"):
        RunOptions(device="gpu")
