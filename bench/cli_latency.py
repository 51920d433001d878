"""Time to the CLI's first line, as a fraction of ``python -c "import torch"`` measured in the same run.

Cases: ``fmprobe --help``, an unknown backbone, a missing CSV, and ``fmprobe report`` on a small results folder
(written through the results API). Each is the median wall time of ``--repeats`` fresh interpreters; the targets
(issue 17) are <= 0.2 for ``--help`` and <= 0.3 for the errors. ``report`` renders plots, so its ratio is shown
for reference, not held to a target. Prints the CPU, each time, and the ratios last.

    python bench/cli_latency.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"--help": 0.2, "unknown backbone": 0.3, "missing CSV": 0.3}


def _wall(argv: list[str], cwd: Path, repeats: int) -> float:
    """Median seconds of ``argv`` in a fresh interpreter (exit code ignored: errors are the point)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _results_folder(folder: Path) -> Path:
    """The report tests' synthetic study (2 datasets x 3 models x 2 probes), written once."""
    sys.path.insert(0, str(ROOT / "tests" / "report"))
    from _report_study import build_study

    build_study(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    repeats = parser.parse_args().repeats
    from fmprobe._io import cpu_model

    fmprobe = [sys.executable, "-m", "fmprobe"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        results = _results_folder(work / "results")
        cases = {
            "--help": [*fmprobe, "--help"],
            "unknown backbone": [*fmprobe, "extract", "-d", "demo", "-b", "efficientnet_lite0_imagenett"],
            "missing CSV": [*fmprobe, "extract", "-d", "csv:missing.csv", "-b", "efficientnet_lite0_imagenet"],
            "report": [*fmprobe, "report", str(results), "-o", str(work / "report"), "--bootstrap", "50"],
        }
        torch_s = _wall([sys.executable, "-c", "import torch"], work, repeats)
        seconds = {name: _wall(argv, work, repeats) for name, argv in cases.items()}
    print(f"cpu: {cpu_model()} ({os.cpu_count()} cores); median of {repeats} runs each")
    print(f"import torch: {torch_s:.2f} s")
    for name, s in seconds.items():
        print(f"{name}: {s:.2f} s")
    print("ratio to `import torch` (target):")
    for name, s in seconds.items():
        target = TARGETS.get(name)
        verdict = "" if target is None else f" (<= {target}: {'ok' if s / torch_s <= target else 'MISSED'})"
        print(f"  {name}: {s / torch_s:.2f}{verdict}")


if __name__ == "__main__":
    main()
