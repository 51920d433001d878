"""`fmprobe finetune` on the command line: one-line errors, and --help shows the library's defaults."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fmprobe import cli
from fmprobe.finetune import Recipe, RunOptions


def test_cli_errors_are_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.delenv("FMPROBE_TRACEBACK", raising=False)
    monkeypatch.setattr(
        sys,
        "argv",
        ["fmprobe", "finetune", "-d", "demo:10", "-b", "efficientnet_lite0_imagenet", "--setting", "partial:x",
         "--out", str(tmp_path)],
    )  # fmt: skip
    with pytest.raises(SystemExit) as stop:
        cli.main()
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("fmprobe: unknown --setting 'partial:x'") and "Traceback" not in err


def test_help_shows_the_recipes_defaults_and_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    text = CliRunner().invoke(cli.app, ["finetune", "--help"]).output
    flat = " ".join(text.split())
    for option, field in [("--epochs", "epochs"), ("--lr", "lr"), ("--warmup-epochs", "warmup_epochs"),
                          ("--setting", "setting"), ("--schedule", "schedule")]:  # fmt: skip
        after = flat.split(f"{option} ", 1)[1]
        assert f"[default: ({Recipe.defaults()[field]})]" in after.split(" --", 1)[0], option
    assert f"[default: ({RunOptions.defaults()['n_bootstrap']})]" in flat.split("--bootstrap ", 1)[1].split(" --")[0]
    assert "constant|cosine" in flat and "none|loss|sampler" in flat and "auto|fp32|bf16|fp16" in flat
    assert "[required]" not in flat.split("--setting ", 1)[1].split(" --", 1)[0]


def test_choice_options_are_checked_by_the_cli() -> None:
    result = CliRunner().invoke(cli.app, ["finetune", "-d", "demo:10", "-b", "x", "--schedule", "linear"])
    assert result.exit_code == 2 and "linear" in result.output
