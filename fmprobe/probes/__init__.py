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
    """A probe by registry name, its parameters checked now (names and constraints), before any fitting.

    Checking at construction means a misspelt or out-of-range parameter fails in a notebook cell or at the
    start of a sweep, naming the probe and the valid choices, instead of after minutes of feature loading or
    deep inside scikit-learn or LightGBM. The probe itself is a scikit-learn estimator: its hyper-parameters
    are chosen on the validation set passed as ``eval_set``, never on the test split.

    Parameters
    ----------
    name : str
        The probe's registry name: ``"logreg"``, ``"knn"``, ``"lgbm"`` or ``"proto"`` (the keys of
        :data:`PROBES`, plugins' included).
    **params : Any
        The probe class's constructor parameters (e.g. ``Cs`` for logreg, ``ks`` for knn, ``task``,
        ``selection_metric``); ``get_params()`` on a default probe lists them.

    Returns
    -------
    ProbeBase
        An unfitted probe with ``fit(X, y, eval_set=(X_val, y_val))``, ``predict``, ``predict_proba`` and, once
        fitted, ``best_params_``, ``val_score_`` and ``search_results_``.

    Raises
    ------
    UnknownNameError
        ``name`` is not a registered probe (the message lists the known ones).
    ProbeError
        A parameter the probe does not have (the message lists the valid ones).
    ProbeParameterError
        A parameter outside its declared constraints, or an unknown ``selection_metric``.

    Examples
    --------
    >>> import numpy as np
    >>> from fmprobe import make_probe
    >>> make_probe("logreg", Cs=[0.1, 1.0])
    LogisticProbe(Cs=[0.1, 1.0])
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.normal(size=(40, 8)), np.repeat([0, 1], 20)
    >>> X[y == 1] += 2
    >>> probe = make_probe("knn", ks=[1, 5]).fit(X[::2], y[::2], eval_set=(X[1::2], y[1::2]))
    >>> probe.best_params_["k"], probe.predict_proba(X[:2]).shape
    (5, (2, 2))
    >>> make_probe("knn", bogus=1)
    Traceback (most recent call last):
        ...
    fmprobe.errors.ProbeError: probe 'knn' has no parameter(s) bogus; valid: block_size, classes, ...
    """
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
