"""Probes: scikit-learn classifiers fitted on frozen features, hyper-parameters chosen on validation only.

``make_probe("logreg" | "knn" | "lgbm" | "proto", **params)`` builds one; every probe has
``fit(X, y, eval_set=(X_val, y_val))``, ``predict``, ``predict_proba``, ``best_params_``, ``val_score_``
and ``search_results_``. A probe registers itself in :data:`PROBES` next to its class (``@PROBES.register``);
its parameters, their defaults and constraints are the class's. No torch here: probing runs on a laptop from
the feature cache alone.
"""

from __future__ import annotations

from typing import Any

from fmprobe.errors import ProbeError
from fmprobe.probes.base import PROBES, ProbeBase, ProbeCannotFit, ProbeFitError, ProbeParameterError, is_stochastic
from fmprobe.probes.knn import KNNProbe
from fmprobe.probes.lgbm import LGBMProbe
from fmprobe.probes.logistic import LogisticProbe
from fmprobe.probes.proto import ProtoProbe


def make_probe(name: str, **params: Any) -> ProbeBase:
    """A probe by registry name, its parameters checked now (names and constraints), before any fitting."""
    cls = PROBES.get(name)
    valid = sorted(cls().get_params())
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ProbeError(f"probe {name!r} has no parameter(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    probe = cls(**params)
    probe._validate_params()
    return probe


__all__ = [
    "PROBES",
    "KNNProbe",
    "LGBMProbe",
    "LogisticProbe",
    "ProbeBase",
    "ProbeCannotFit",
    "ProbeFitError",
    "ProbeParameterError",
    "ProtoProbe",
    "is_stochastic",
    "make_probe",
]
