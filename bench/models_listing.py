"""How fast is `fmprobe models` on a fresh machine (no cache folder)? Target: < 3 s.

One run, two fresh processes with an empty home and cache folder: (1) `python -m fmprobe models`, which reads the
catalog's data; (2) what listing cost before the catalog: import the registry (torch, timm, open_clip) and build
every entry on the meta device for its widths and parameter count. The last line prints both and their ratio.

    python bench/models_listing.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OLD_WAY = (
    "from fmprobe.backbones import core\n"
    "for _, spec in core.BACKBONES.items():\n"
    "    core.describe_shapes(spec)\n"
)


def timed(args: list[str], home: str) -> float:
    env = {**os.environ, "HOME": home, "FMPROBE_CACHE": os.path.join(home, "cache"), "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory() as home:
        catalog = timed(["-m", "fmprobe", "models"], home)
        assert not Path(home, "cache").exists(), "fmprobe models wrote a cache folder"
        built = timed(["-c", OLD_WAY], home)
    print(f"fmprobe models (catalog data): {catalog:.2f} s; registry built on meta: {built:.2f} s; ratio {built / catalog:.1f}x")


if __name__ == "__main__":
    main()
