"""The batched logistic C path: the same chosen C as a loop of fresh scikit-learn fits and the same test metric at
that C (real MedMNIST images, seeded random projections of the pixels), the N-space basis when D > N, the
threads rule, and the solver's own optimum against a tightly converged scikit-learn fit."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from _helpers import shared_file
from _probe_data import blobs
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from fmprobe.probes import LogisticProbe
from fmprobe.probes.base import auto_threads, select_best
from fmprobe.probes.logistic import DEFAULT_CS, THREADS_FROM
from fmprobe.probes.logistic_path import diagonal_basis

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


@pytest.mark.parametrize("n", [120, 600], ids=["D>N: N-space basis", "N>D: rotated basis"])
def test_solution_is_the_optimum_of_scikit_learns_objective(n: int) -> None:
    X, y = blobs(7, n, d=300 if n < 300 else 40, c=3)
    Xt, _ = blobs(8, 200, d=X.shape[1], c=3)
    probe = LogisticProbe(C=0.05, tol=1e-7).fit(X, y)
    Xs, Xts = ((A - probe.mean_) / probe.scale_ for A in (X, Xt))
    exact = LogisticRegression(C=0.05, tol=1e-10, max_iter=10_000).fit(Xs, y)
    np.testing.assert_allclose(probe.predict_proba(Xt), exact.predict_proba(Xts), atol=1e-4)


def test_basis_is_orthonormal_diagonalises_the_features_and_keeps_the_margins() -> None:
    for n, d in ((50, 80), (80, 50)):
        Xs = np.random.default_rng(n).normal(size=(n, d))
        basis = diagonal_basis(Xs)
        FB = Xs @ basis.B
        np.testing.assert_allclose(basis.B.T @ basis.B, np.eye(basis.B.shape[1]), atol=1e-5)  # float32 eigh
        np.testing.assert_allclose(FB.T @ FB, np.diag(basis.e), atol=1e-3 * basis.e.max())
        Z = np.random.default_rng(1).normal(size=(basis.B.shape[1], 3))
        np.testing.assert_allclose(basis.margins(Z), FB @ Z, atol=1e-8 * np.abs(FB @ Z).max())
        G = np.random.default_rng(2).normal(size=(n, 3))
        np.testing.assert_allclose(basis.back(G), FB.T @ G, atol=1e-8 * np.abs(FB.T @ G).max())


def test_auto_threads_uses_every_core_only_for_large_paths() -> None:
    assert auto_threads(5000 * 768 * 17, THREADS_FROM, cores=2) == 1
    assert auto_threads(THREADS_FROM, THREADS_FROM, cores=2) == 2
    probe = LogisticProbe(n_threads=3)
    assert probe._threads((10, 10), np.zeros(10), 17) == 3
