"""LightGBM cost/accuracy trade-off on real MedMNIST features (a script, not a test):
``python bench/lgbm_tradeoff.py [--quick] [--cache DIR]``.

On EfficientNet-Lite0 ImageNet features (64 px, 1280 dims; extracted once into ``--cache``) of PneumoniaMNIST and
BreastMNIST, fits LGBMProbe with each projection setting: the raw features (``pca_components=None``), PCA to 256,
PCA to 64, and the default grid (:data:`fmprobe.probes.lgbm.DEFAULT_PCA`, chosen on validation), and prints the
fit time, the chosen size and rounds, and the validation and test AUC. Then times one setting at 1 thread and at
every core, the measurement behind ``n_jobs="auto"`` (:data:`fmprobe.probes.lgbm.THREADS_FROM`). The CPU model and
the table are printed last.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from probe_speed import cpu_model, real_features  # noqa: E402

from fmprobe.metrics import roc_auc  # noqa: E402
from fmprobe.probes import LGBMProbe  # noqa: E402
from fmprobe.probes.lgbm import DEFAULT_PCA  # noqa: E402

DATA = {"breastmnist": "/work/shared/data/breastmnist.npz", "pneumoniamnist": "/work/shared/data/pneumoniamnist.npz"}
SETTINGS = {"raw 1280": None, "pca 256": 256, "pca 64": 64, f"default grid {DEFAULT_PCA}": DEFAULT_PCA}


def fit(splits, n_jobs: int | str, **params) -> tuple[LGBMProbe, float, float]:
    (X, y), (Xv, yv), (Xt, yt) = splits
    start = time.perf_counter()
    probe = LGBMProbe(n_jobs=n_jobs, **params).fit(X, y, eval_set=(Xv, yv))
    seconds = time.perf_counter() - start
    return probe, seconds, roc_auc(yt, probe.predict_proba(Xt))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="BreastMNIST only, 100 rounds (a smoke run)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "fmprobe-bench")
    args = parser.parse_args()
    names = ["breastmnist"] if args.quick else list(DATA)
    extra = {"n_estimators": 100} if args.quick else {}
    table = []
    for name in names:
        splits = real_features(DATA[name], args.cache)
        if splits is None:
            continue
        for label, pca in SETTINGS.items():
            probe, seconds, auc = fit(splits, "auto", pca_components=pca, **extra)
            chosen = probe.best_params_
            table.append(f"{name:15s} {label:24s} {seconds:7.1f} s  pca={chosen['pca_components']!s:5s} "
                         f"rounds={chosen['n_estimators']:4d}  val AUC {probe.val_score_:.4f}  test AUC {auc:.4f}")  # fmt: skip
            print(table[-1], flush=True)
        for threads in sorted({1, os.cpu_count() or 1}):
            _, seconds, auc = fit(splits, threads, pca_components=256, **extra)
            rows = len(splits[0][1])
            table.append(f"{name:15s} pca 256, {threads} thread(s)    {seconds:7.1f} s  ({rows} x 256 cells: "
                         f"{rows * 256:,}; test AUC {auc:.4f})")  # fmt: skip
            print(table[-1], flush=True)
    print(f"CPU: {cpu_model()} ({os.cpu_count()} cores)")
    print("\n".join(table))


if __name__ == "__main__":
    main()
