"""The README's examples run as written: the quick-start block, line by line, on a folder of images."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from _helpers import make_images

README = Path(__file__).resolve().parents[1] / "README.md"


def _block(name: str, language: str) -> str:
    """The README code block between ``<!-- NAME:begin ... -->`` and ``<!-- NAME:end -->``."""
    text = README.read_text(encoding="utf-8")
    block = re.search(rf"<!-- {name}:begin.*?-->\s*```{language}\n(.*?)```\s*<!-- {name}:end -->", text, re.S)
    assert block, f"README.md lost its {name} block markers"
    return block.group(1)


def _quickstart_commands() -> list[str]:
    """The command lines of the README block between the quickstart markers (comments stripped)."""
    lines = [line.split("#", 1)[0].strip() for line in _block("quickstart", "bash").splitlines()]
    return [line for line in lines if line]


@pytest.mark.slow
def test_the_quick_start_runs_as_written_on_a_folder_of_images(tmp_path: Path) -> None:
    for cls, seed in (("benign", 0), ("malignant", 1)):
        make_images(tmp_path / "my_images" / cls, [cls] * 30, seed=seed, size=32)
    commands = _quickstart_commands()
    assert [c.split()[:2] for c in commands] == [["fmprobe", "extract"], ["fmprobe", "probe"], ["fmprobe", "report"]]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for command in commands:
        argv = [sys.executable, "-m", "fmprobe", *shlex.split(command)[1:]]
        done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{command}\n{done.stderr}"
    assert (tmp_path / "report" / "report.html").is_file() and list((tmp_path / "features").rglob("*.h5"))
    assert "Use efficientnet_lite0_imagenet" in done.stdout + done.stderr or (tmp_path / "report" / "report.md").read_text()
    python = subprocess.run([sys.executable, "-c", _block("python-api", "python")], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert python.returncode == 0, python.stderr
    assert "FeatureFile(" in python.stdout and "'C':" in python.stdout and "roc_auc" in python.stdout
