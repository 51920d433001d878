"""Probes: scikit-learn classifiers fitted on frozen features, hyper-parameters chosen on validation only.

``make_probe("logreg" | "knn" | "lgbm", **params)`` builds one; every probe has
``fit(X, y, eval_set=(X_val, y_val))``, ``predict``, ``predict_proba``, ``best_params_``, ``val_score_``
and ``search_results_``. No torch here: probing runs on a laptop from the feature cache alone.
"""

from __future__ import annotations

from typing import Any

from fmprobe.errors import ProbeError
from fmprobe.probes.base import ProbeBase, ProbeFitError
from fmprobe.probes.knn import KNNProbe
from fmprobe.probes.lgbm import LGBMProbe
from fmprobe.probes.logistic import LogisticProbe
from fmprobe.registry import Registry

PROBES: Registry[type[ProbeBase]] = Registry("probe", "Known probes: logreg, knn, lgbm.")
PROBES.add("logreg", LogisticProbe)
PROBES.add("knn", KNNProbe)
PROBES.add("lgbm", LGBMProbe)


def make_probe(name: str, **params: Any) -> ProbeBase:
    """A probe by registry name, with its parameters checked against the ones it accepts."""
    cls = PROBES.get(name)
    valid = sorted(cls().get_params())
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ProbeError(f"probe {name!r} has no parameter(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    return cls(**params)


__all__ = ["PROBES", "KNNProbe", "LGBMProbe", "LogisticProbe", "ProbeBase", "ProbeFitError", "make_probe"]
