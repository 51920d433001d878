"""Seeded toy features shared by the probe tests (tests/probes/ is on sys.path for its test modules)."""

from __future__ import annotations

import numpy as np

from fmprobe.probes import make_probe

# LightGBM's threads slow tiny problems down; the tests use one thread and few rounds to stay fast.
FAST_LGBM = {"n_estimators": 60, "early_stopping_rounds": 10, "n_jobs": 1}


def fast_probe(name: str, **params) -> object:
    """A probe by name; LightGBM with FAST_LGBM settings."""
    return make_probe(name, **({**FAST_LGBM, **params} if name == "lgbm" else params))


def blobs(seed: int, n: int, d: int = 16, c: int = 3, sep: float = 0.6):
    """Structured features: class centres plus isotropic noise (hard enough that hyper-parameters matter)."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(1234).normal(size=(c, d))
    y = rng.integers(0, c, n)
    return (centres[y] * sep + rng.normal(size=(n, d))).astype(np.float32), y


def toy_splits(seed: int = 0, c: int = 3, d: int = 16):
    return [blobs(seed + i, n, d, c) for i, n in enumerate((400, 200, 200))]


def assert_test_labels_cannot_change_choices(name: str, train, val, X_test, y_test, metric) -> object:
    """Fit twice, scoring test labels and a permutation of them: choices, scores and predictions must be equal.
    Returns the fitted probe."""

    def run(test_labels: np.ndarray):
        probe = fast_probe(name).fit(*train, eval_set=val)
        proba = probe.predict_proba(X_test)
        metric(test_labels, proba)  # the test labels are used, after fitting, as a study does
        return probe, proba

    probe, proba = run(y_test)
    probe_p, proba_p = run(np.random.default_rng(0).permutation(y_test))
    assert probe.best_params_ == probe_p.best_params_ and probe.val_score_ == probe_p.val_score_
    np.testing.assert_array_equal(proba, proba_p)
    return probe
