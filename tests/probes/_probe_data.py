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
