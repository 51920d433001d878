"""The logistic C path on real data: the same chosen C as a loop of fresh scikit-learn fits and the same test metric
at that C (real MedMNIST images, seeded random projections of the pixels; binary and balanced multinomial)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from _helpers import shared_file
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from fmprobe.probes import LogisticProbe
from fmprobe.probes.base import select_best
from fmprobe.probes.logistic import DEFAULT_CS

METRIC_TOL = 1e-3


def _projected(name: str, dims: int, n_train: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, val, test) of a real MedMNIST file: pixels through a seeded random projection (a tiny random
    "backbone"), the first ``n_train`` training rows."""
    data = np.load(shared_file(f"{name}.npz"))
    width = int(np.prod(data["train_images"].shape[1:]))
    W = np.random.default_rng(0).normal(size=(width, dims)) / np.sqrt(width)
    out = []
    for split in ("train", "val", "test"):
        X = (data[f"{split}_images"].reshape(-1, width) / 255.0 @ W).astype(np.float32)
        y = data[f"{split}_labels"].ravel()
        out.append((X[:n_train], y[:n_train]) if split == "train" else (X, y))
    return out


@pytest.mark.parametrize(
    ("name", "class_weight"), [("pneumoniamnist", None), ("retinamnist", "balanced")], ids=["binary", "multinomial"]
)
def test_path_chooses_the_fresh_fits_c_with_the_same_test_metric(name: str, class_weight: str | None) -> None:
    (X, y), (Xv, yv), (Xt, yt) = _projected(name, 32, 800)
    probe = LogisticProbe(Cs=DEFAULT_CS[2:11:2], class_weight=class_weight).fit(X, y, eval_set=(Xv, yv))
    metric = probe._selection_metric()
    mean, scale = probe.mean_, probe.scale_
    Cs = [r["C"] for r in probe.search_results_]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fits = [LogisticRegression(C=C, class_weight=class_weight).fit((X - mean) / scale, y) for C in Cs]
    ref = [{"C": C, "score": metric(yv, f.predict_proba((Xv - mean) / scale))} for C, f in zip(Cs, fits, strict=True)]
    best = select_best(ref)
    assert probe.best_params_["C"] == Cs[best]
    ours, theirs = metric(yt, probe.predict_proba(Xt)), metric(yt, fits[best].predict_proba((Xt - mean) / scale))
    assert abs(ours - theirs) <= METRIC_TOL
    assert all(r["converged"] for r in probe.search_results_[: best + 1])
