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


def _quickstart_commands() -> list[str]:
    """The command lines of the README block between the quickstart markers (comments stripped)."""
    text = README.read_text(encoding="utf-8")
    block = re.search(r"<!-- quickstart:begin.*?-->\s*```bash\n(.*?)```\s*<!-- quickstart:end -->", text, re.S)
    assert block, "README.md lost its quick-start block markers"
    return [line.split("#", 1)[0].strip() for line in block.group(1).splitlines() if line.split("#", 1)[0].strip()]


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
