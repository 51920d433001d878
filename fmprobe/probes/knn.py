"""Cosine k-nearest-neighbour probe with majority or temperature-weighted voting (the DINOv2 protocol).

Every candidate (k, voting) is evaluated from ONE top-``max(k)`` search: neighbours come back sorted by
similarity, so the votes of the k nearest are prefix sums along the neighbour axis. The search multiplies
blocks of queries by the L2-normalised training matrix; a block's similarity matrix is bounded in size
(never ``[N_val, N_train]`` at once) and reduced with ``np.argpartition``.
"""

from __future__ import annotations

from collections.abc import Iterator
from numbers import Integral, Real
from typing import Any

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions
from threadpoolctl import threadpool_limits

from fmprobe.probes.base import (
    PROBES,
    ProbeBase,
    SequenceOf,
    auto_threads,
    l2_normalize,
    label_prior,
    select_best,
    transform_rows,
)
from fmprobe.tasks import MISSING

DEFAULT_KS = (1, 3, 5, 10, 20, 50, 100, 200)
VOTINGS = ("majority", "weighted")  # listed simplest first: majority wins a validation tie
_AT_LEAST_ONE = Interval(Integral, 1, None, closed="left")
SIM_BLOCK_BYTES = 1 << 28  # ~256 MiB for one block's similarities + partition indices
VOTE_BLOCK_CELLS = 1 << 23  # queries x neighbours x classes per block of prefix-sum votes
# Multiply-adds of one similarity search (queries x train x dims) from which n_threads="auto" uses every core. On a
# shared 2-core AMD EPYC (bench/probe_speed.py) a second thread never paid: the PneumoniaMNIST sweep (524 x 4708 x
# 1280, 3e9) took 1.14 s with one BLAS thread and 2.15 s with two; the threshold is above every size measured.
THREADS_FROM = 1e12


def topk(Q: np.ndarray, ref: np.ndarray, k: int, block_size: int) -> Iterator[tuple[slice, np.ndarray, np.ndarray]]:
    """Yield ``(rows, sims, idx)`` per block of queries: the ``k`` most cosine-similar rows of ``ref``.

    ``ref`` must be L2-normalised; queries are normalised block by block. Neighbours are sorted by
    similarity, descending, ties by training index, so results are deterministic.
    """
    n_ref = ref.shape[0]
    rows_per_block = max(1, min(block_size, SIM_BLOCK_BYTES // (n_ref * (ref.itemsize + 8))))
    for start in range(0, Q.shape[0], rows_per_block):
        rows = slice(start, min(start + rows_per_block, Q.shape[0]))
        S = l2_normalize(Q[rows]) @ ref.T
        if k < n_ref:
            idx = np.argpartition(S, n_ref - k, axis=1)[:, n_ref - k :]
        else:
            idx = np.broadcast_to(np.arange(n_ref), S.shape)
        sims = np.take_along_axis(S, idx, axis=1)
        del S
        order = np.lexsort((idx, -sims), axis=1)
        yield rows, np.take_along_axis(sims, order, axis=1), np.take_along_axis(idx, order, axis=1)


def prefix_votes(
    sims: np.ndarray,
    idx: np.ndarray,
    targets: np.ndarray,
    ks: list[int],
    voting: str,
    temperature: float,
    known: np.ndarray | None = None,
    prior: np.ndarray | None = None,
) -> dict[int, np.ndarray]:
    """Vote fractions over the first k neighbours, for every k in ``ks``, from one prefix sum.

    ``targets`` is one-hot ``[N_train, C]`` (or 0/1 labels ``[N_train, L]``); majority votes count
    neighbours, weighted votes add ``exp(sim / T)`` (shifted by the row maximum, which cancels).
    With ``known`` (0/1 ``[N_train, L]``: which multilabel entries are not missing) each label is voted
    among the neighbours that know it, weights renormalised over them; where none of the k does, the
    label's ``prior`` is returned.
    """
    out = {k: np.empty((len(idx), targets.shape[1])) for k in ks}
    k_max = max(ks)
    rows_per_block = max(1, VOTE_BLOCK_CELLS // (k_max * targets.shape[1]))
    for s in range(0, len(idx), rows_per_block):
        sl = slice(s, s + rows_per_block)
        sim = sims[sl, :k_max].astype(np.float64)
        w = np.ones_like(sim) if voting == "majority" else np.exp((sim - sim[:, :1]) / temperature)
        votes = np.cumsum(targets[idx[sl, :k_max]] * w[:, :, None], axis=1)
        if known is None:
            total = np.cumsum(w, axis=1)
            for k in ks:
                out[k][sl] = votes[:, k - 1] / total[:, k - 1, None]
            continue
        total = np.cumsum(known[idx[sl, :k_max]] * w[:, :, None], axis=1)  # per label: known neighbours only
        for k in ks:
            t = total[:, k - 1]
            with np.errstate(invalid="ignore", divide="ignore"):
                out[k][sl] = np.where(t > 0, votes[:, k - 1] / np.where(t > 0, t, 1.0), prior)
    return out


@PROBES.register("knn")
class KNNProbe(ProbeBase):
    """kNN probe on cosine similarity of L2-normalised features.

    Parameters
    ----------
    ks : neighbour counts searched with ``eval_set`` (each capped at the training-set size).
    votings : voting rules searched: "majority" (vote fractions) and/or "weighted" (exp(sim / T)).
    k, voting : what is used without ``eval_set``.
    temperature : T of the weighted vote (0.07 as in DINOv2).
    block_size : queries per similarity block (lowered automatically for large training sets).
    n_threads : BLAS threads of the search: "auto" (by size, :data:`THREADS_FROM`), a number, or None (leave the
        thread pools as they are).
    task, selection_metric, classes : as for every probe (see :mod:`fmprobe.probes.base`).

    ``predict_proba`` returns the (weighted) vote fractions; a majority tie goes to the first class,
    as in scikit-learn. Validation ties go to the larger k, then to majority voting. Multilabel targets
    with missing entries (-1): each label's vote is taken among the neighbours that know it (weights
    renormalised over them), and is the label's training prevalence when none of the k neighbours does.
    """

    _parameter_constraints = {
        **ProbeBase._parameter_constraints,
        "ks": [SequenceOf(_AT_LEAST_ONE)],
        "votings": [SequenceOf(StrOptions(set(VOTINGS)))],
        "k": [_AT_LEAST_ONE],
        "voting": [StrOptions(set(VOTINGS))],
        "temperature": [Interval(Real, 0, None, closed="neither")],
        "block_size": [_AT_LEAST_ONE],
        "n_threads": [_AT_LEAST_ONE, StrOptions({"auto"}), None],
    }

    def __init__(
        self,
        *,
        ks: tuple[int, ...] = DEFAULT_KS,
        votings: tuple[str, ...] = VOTINGS,
        k: int = 20,
        voting: str = "weighted",
        temperature: float = 0.07,
        block_size: int = 1024,
        n_threads: int | str | None = "auto",
        task: str = "auto",
        selection_metric: str | None = None,
        classes: Any = None,
        decoding: str = "auto",
    ) -> None:
        self.ks = ks
        self.votings = votings
        self.k = k
        self.voting = voting
        self.temperature = temperature
        self.block_size = block_size
        self.n_threads = n_threads
        self.task = task
        self.selection_metric = selection_metric
        self.classes = classes
        self.decoding = decoding

    def _targets(self, Y: np.ndarray) -> np.ndarray:
        if self.task_ == "multilabel":
            return (Y == 1).astype(np.float64)  # a missing entry votes for nothing (and is left out of the total)
        return np.eye(len(self.classes_))[Y]

    def _votes(self, sims: np.ndarray, idx: np.ndarray, ks: list[int], voting: str) -> dict[int, np.ndarray]:
        return prefix_votes(
            sims, idx, self.train_targets_, ks, voting, self.temperature, self.train_known_, self.prior_
        )

    def _threads(self, n_queries: int) -> int | None:
        if self.n_threads != "auto":
            return self.n_threads
        return auto_threads(n_queries * self.train_features_.shape[0] * self.train_features_.shape[1], THREADS_FROM)

    def _fit(self, X: np.ndarray, Y: np.ndarray, val: tuple[np.ndarray, np.ndarray] | None, owned: bool) -> None:
        self.train_features_ = transform_rows(X, l2_normalize, owned)
        self.train_targets_ = self._targets(Y)
        self.train_known_ = self.prior_ = None
        if self.task_ == "multilabel" and (Y == MISSING).any():
            self.train_known_ = (Y != MISSING).astype(np.float64)
            self.prior_ = np.array([label_prior(Y[:, j]) for j in range(Y.shape[1])])
        n = X.shape[0]
        if val is None:
            self.k_, self.voting_ = min(int(self.k), n), self.voting
            self.best_params_ = {"k": self.k_, "voting": self.voting_}
            self.val_score_, self.search_results_ = None, []
            return
        ks = sorted({min(int(k), n) for k in self.ks}, reverse=True)  # most regularised (largest k) first
        X_val, Y_val = val
        votes = {v: {k: np.empty((len(X_val), self.train_targets_.shape[1])) for k in ks} for v in self.votings}
        with threadpool_limits(limits=self._threads(len(X_val))):
            for rows, sims, idx in topk(X_val, self.train_features_, max(ks), self.block_size):
                for v in self.votings:
                    for k, p in self._votes(sims, idx, ks, v).items():
                        votes[v][k][rows] = p
        self.search_results_ = [
            {"k": k, "voting": v, "score": self._score(Y_val, votes[v][k])}
            for k in ks
            for v in VOTINGS
            if v in self.votings
        ]
        best = self.search_results_[select_best(self.search_results_)]
        self.k_, self.voting_ = best["k"], best["voting"]
        self.best_params_ = {"k": self.k_, "voting": self.voting_}
        self.val_score_ = best["score"]

    def _predict_scores(self, X: np.ndarray) -> np.ndarray:
        out = np.empty((X.shape[0], self.train_targets_.shape[1]))
        with threadpool_limits(limits=self._threads(len(X))):
            for rows, sims, idx in topk(X, self.train_features_, self.k_, self.block_size):
                out[rows] = self._votes(sims, idx, [self.k_], self.voting_)[self.k_]
        return out
