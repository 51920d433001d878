"""The whole logistic C path as ONE batched problem: every (output, C) pair is solved at once by a vectorised L-BFGS.

Why it is fast (``bench/probe_speed.py`` measures it against fresh scikit-learn fits):

1. **A diagonal basis.** The weights are expressed on the eigenvectors of the standardised features' Gram
   matrix (``N >= D``; the features stay as they are, the ``D x D`` basis is applied to the weights), or the
   features are replaced by ``U sqrt(e)`` from the ``N x N`` Gram matrix when ``D > N`` (the representer
   theorem: the optimal weights lie in the span of the training rows, so the problem shrinks to ``N``
   dimensions). An orthonormal change of basis leaves the L2 penalty ``||w||^2`` and every margin unchanged, so
   the optimum is the same problem's optimum, mapped back exactly.
2. **A preconditioner per C.** In that basis the Hessian is close to ``h diag(e) / N + I / (C S)`` (``h``: the
   loss's mean curvature per class, ``S``: the sum of sample weights), so each coordinate is scaled by its inverse
   square root; ``h`` starts at its value for uniform probabilities and is re-measured a few times as the fit
   sharpens (the change of variables is diagonal, so the L-BFGS history is carried over exactly). Correlated features and weak regularisation no longer slow L-BFGS down: a few tens of iterations per C
   instead of hundreds.
3. **One matrix product per iteration.** The weights of every still-active problem are stacked into one
   ``r x (P K)`` matrix, so an iteration is two large GEMMs over the features for all C values together; a
   problem leaves the batch once converged.

The objective is scikit-learn's (``LogisticRegression(solver="lbfgs")``): ``sum_i s_i loss_i / S + ||w||^2 /
(2 C S)`` with an unpenalised intercept, multinomial (K columns) for more than two classes, one column for two.
A problem stops by scikit-learn's rule (``gtol``): when the largest absolute entry of the gradient of that
objective is at most ``tol``. Both solvers then stop within the same distance of the same optimum, which is
close for moderate C; for weak regularisation (C >= 100) that rule is loose for both (a default scikit-learn fit's
probabilities at C = 1e4 can be 0.2 away from the optimum's), which ``tol`` tightens. Numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit, log_expit

from fmprobe.probes.base import ROW_BLOCK

RESCALE_AT = frozenset({4, 12, 30, 80})  # iterations at which the preconditioner follows the current curvature
HISTORY = 10  # L-BFGS correction pairs kept per problem (scipy's default)
ARMIJO = 1e-4  # sufficient-decrease constant of the backtracking line search
NOISE = 10  # float rounding of the objective, in units of the features' machine epsilon (relative)
MAX_HALVINGS = 40  # backtracking steps before a problem's line search gives up (it is then at float precision)
RANK_TOL = 1e-10  # eigenvalues below this fraction of the largest are dropped from the N-space basis


@dataclass(frozen=True)
class Basis:
    """Coordinates ``z`` for the weights, ``w = B z`` with orthonormal ``B``, in which the features' Gram matrix is
    ``diag(e)``. The margins are ``F @ B @ z`` when ``rotate`` (``F`` the standardised features: applying ``B`` to
    the weights costs ``D^2`` per column instead of rotating ``N x D`` features once), else ``F @ z`` (``F`` already
    in the basis: the ``N``-space representation)."""

    F: np.ndarray  # [N, D] (rotate) or [N, r], the features' dtype
    B: np.ndarray  # [D, r] orthonormal columns, float64
    e: np.ndarray  # [r] eigenvalues of the features' Gram matrix in the basis, float64
    rotate: bool

    def margins(self, W: np.ndarray) -> np.ndarray:
        """``F B W`` for stacked weight columns ``W [r, P K]``."""
        W = self.B.astype(self.F.dtype) @ W.astype(self.F.dtype) if self.rotate else W.astype(self.F.dtype)
        return self.F @ W

    def back(self, G: np.ndarray) -> np.ndarray:
        """``B^T F^T G``: a gradient with respect to the margins mapped to the basis coordinates (float64)."""
        out = self.F.T @ G
        return (self.B.T.astype(self.F.dtype) @ out if self.rotate else out).astype(np.float64)


def diagonal_basis(Xs: np.ndarray) -> Basis:
    """The eigenbasis of standardised features ``Xs`` (``N >= D``), or their ``N``-space representation (``D > N``).

    Only the preconditioner depends on the eigenvectors' accuracy, so the ``D x D`` eigenproblem is solved in
    float32 (twice as fast); the columns are orthonormal to float32 precision."""
    n, d = Xs.shape
    if n >= d:
        gram = np.zeros((d, d))
        for i in range(0, n, ROW_BLOCK):
            block = Xs[i : i + ROW_BLOCK]
            gram += (block.T @ block).astype(np.float64)
        e, V = np.linalg.eigh(gram.astype(np.float32))
        return Basis(Xs, V.astype(np.float64), np.maximum(e.astype(np.float64), 0.0), rotate=True)
    X64 = Xs.astype(np.float64)
    e, U = np.linalg.eigh(X64 @ X64.T)
    keep = e > RANK_TOL * max(float(e.max()), 1e-300)
    e, U = e[keep], U[:, keep]
    root = np.sqrt(e)
    return Basis((U * root).astype(Xs.dtype), (X64.T @ U) / root, e, rotate=False)


@dataclass
class Problems:
    """A batch of logistic problems on the same features: problem p fits output column ``col[p]`` at ``C[p]``.

    ``Y`` is ``[N, L]`` 0/1 targets (``K == 1``: binomial) or ``[N, 1]`` class codes (``K > 1``: multinomial);
    ``sw`` holds ``[N, L]`` sample weights (0 where a label is missing)."""

    Y: np.ndarray
    sw: np.ndarray
    col: np.ndarray
    C: np.ndarray
    K: int

    def __post_init__(self) -> None:
        self.S = self.sw.sum(axis=0)[self.col]  # per problem: the sum of its sample weights


def _loss_grad(basis: Basis, pr: Problems, idx: np.ndarray, W: np.ndarray, b: np.ndarray) -> tuple:
    """Objective, weight gradient, intercept gradient and mean curvature per class ``[P, K]`` (the diagonal of the
    loss's Hessian per unit of feature variance) of problems ``idx`` at ``W [P, r, K]``, ``b [P, K]``.

    The margins and their element-wise work stay in the features' dtype (float32 from the cache): the products
    dominate and float32 halves their cost; sums over rows accumulate in float64."""
    F = basis.F
    n, r = F.shape[0], W.shape[1]
    P, K = len(idx), pr.K
    Z = basis.margins(W.transpose(1, 0, 2).reshape(r, P * K)).reshape(n, P, K)
    Z += b.astype(F.dtype)[None]
    sw = pr.sw[:, pr.col[idx]].astype(F.dtype)  # [N, P]
    if K == 1:
        z, y = Z[:, :, 0], pr.Y[:, pr.col[idx]].astype(F.dtype)
        loss = -(y * log_expit(z) + (1 - y) * log_expit(-z))
        p = expit(z)
        curv = (sw * p * (1 - p)).sum(axis=0, dtype=np.float64)[:, None]
        G = (sw * (p - y))[:, :, None]
    else:
        rows, codes = np.arange(n), pr.Y[:, 0].astype(np.int64)
        top = Z.max(axis=2, keepdims=True)
        G = np.exp(Z - top)
        total = G.sum(axis=2, keepdims=True)
        loss = (top + np.log(total))[:, :, 0] - Z[rows, :, codes]
        G /= total
        curv = (sw[:, :, None] * G * (1 - G)).sum(axis=0, dtype=np.float64)
        G[rows, :, codes] -= 1
        G *= sw[:, :, None]
    S, C = pr.S[idx], pr.C[idx]
    f = (sw * loss).sum(axis=0, dtype=np.float64) / S + 0.5 * np.einsum("prk,prk->p", W, W) / (C * S)
    gW = basis.back(G.reshape(n, P * K)).reshape(r, P, K).transpose(1, 0, 2)
    gW = gW / S[:, None, None] + W / (C * S)[:, None, None]
    return f, gW, G.sum(axis=0, dtype=np.float64) / S[:, None], curv / S[:, None]


def _two_loop(g: np.ndarray, Sh: np.ndarray, Yh: np.ndarray, rho: np.ndarray, newest: np.ndarray) -> np.ndarray:
    """L-BFGS direction ``-H g`` for every problem at once; history slots with ``rho == 0`` are empty."""
    q = g.copy()
    m = Sh.shape[1]
    order = [(newest - j) % m for j in range(m)]  # newest first
    rows = np.arange(len(g))
    alphas = []
    for slot in order:
        s, y = Sh[rows, slot], Yh[rows, slot]
        a = rho[rows, slot] * np.einsum("pn,pn->p", s, q)
        q -= a[:, None] * y
        alphas.append(a)
    s, y = Sh[rows, newest], Yh[rows, newest]
    yy = np.einsum("pn,pn->p", y, y)
    gamma = np.where(rho[rows, newest] > 0, np.einsum("pn,pn->p", s, y) / np.where(yy > 0, yy, 1.0), 1.0)
    q *= gamma[:, None]
    for slot, a in zip(reversed(order), reversed(alphas), strict=True):
        s, y = Sh[rows, slot], Yh[rows, slot]
        beta = rho[rows, slot] * np.einsum("pn,pn->p", y, q)
        q += (a - beta)[:, None] * s
    return -q


@dataclass(frozen=True)
class PathFit:
    """The solutions of a batch: ``W [P, r, K]`` in the basis, intercepts ``b [P, K]``, iterations, convergence."""

    W: np.ndarray
    b: np.ndarray
    n_iter: np.ndarray
    converged: np.ndarray


class _Batch:
    """The problems in preconditioned coordinates ``u`` (``[w, b] = scale * u``), flattened per problem."""

    def __init__(self, basis: Basis, pr: Problems) -> None:
        self.basis, self.F, self.pr, self.e = basis, basis.F, pr, basis.e
        self.r, self.K = len(basis.e), pr.K
        h = 0.25 if pr.K == 1 else (1.0 / pr.K) * (1.0 - 1.0 / pr.K)  # the loss's curvature at the start (p = 1/K)
        everyone = np.arange(len(pr.C))
        self.scale = np.empty((len(pr.C), (self.r + 1) * self.K))
        self.scale[:] = self._scale(everyone, np.full((len(pr.C), self.K), h))
        self.curv = np.full((len(pr.C), self.K), h)

    def _scale(self, idx: np.ndarray, h: np.ndarray) -> np.ndarray:
        """Inverse square roots of the Hessian's diagonal ``h_k e_j / N + 1 / (C S)`` (weights), ``h_k`` (intercepts)."""
        h = np.maximum(h, 1e-8)
        lam = 1.0 / (self.pr.C[idx] * self.pr.S[idx])
        pw = 1.0 / np.sqrt(h[:, None, :] * self.e[None, :, None] / self.F.shape[0] + lam[:, None, None])
        return np.concatenate([pw.reshape(len(idx), -1), 1.0 / np.sqrt(h)], axis=1)

    def rescale(self, idx: np.ndarray) -> np.ndarray:
        """Re-fit the preconditioner of problems ``idx`` to their current curvature; returns old / new scale (the
        caller maps ``u`` and the L-BFGS history: a diagonal change of variables, so no information is lost)."""
        new = self._scale(idx, self.curv[idx])
        ratio = self.scale[idx] / new
        self.scale[idx] = new
        return ratio

    def split(self, u: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        wb = u * self.scale[idx]
        rk = self.r * self.K
        return wb[:, :rk].reshape(len(idx), self.r, self.K), wb[:, rk:]

    def evaluate(self, u: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Objective and gradient in ``u`` (and the curvature, kept for :meth:`rescale`)."""
        f, gW, gb, curv = _loss_grad(self.basis, self.pr, idx, *self.split(u, idx))
        self.curv[idx] = curv
        return f, np.concatenate([gW.reshape(len(idx), -1), gb], axis=1) * self.scale[idx]


def _line_search(batch: _Batch, u: np.ndarray, f: np.ndarray, d: np.ndarray, gd: np.ndarray, idx: np.ndarray):
    """Backtracking from step 1 for every problem of ``idx``, re-evaluating only those still searching.

    A step is accepted on sufficient decrease (Armijo), or, where float32 products make the objective noisy near
    the optimum, on Hager and Zhang's approximate Wolfe test: the objective within its rounding noise and the
    slope along the direction at most ``(1 - 2 ARMIJO) |slope at 0|``. Returns the accepted points, their objective
    and gradient, and which problems found a step."""
    u_new, f_new, g_new = np.empty_like(d), np.empty(len(idx)), np.empty_like(d)
    noise = NOISE * np.finfo(batch.F.dtype).eps * (np.abs(f) + 1.0)
    t = np.ones(len(idx))
    pending = np.arange(len(idx))
    for _ in range(MAX_HALVINGS):
        x = u[pending] + t[pending, None] * d[pending]
        f_try, g_try = batch.evaluate(x, idx[pending])
        armijo = f_try <= f[pending] + ARMIJO * t[pending] * gd[pending]
        slope = np.einsum("pn,pn->p", g_try, d[pending])
        wolfe = (f_try <= f[pending] + noise[pending]) & (slope <= -(1 - 2 * ARMIJO) * gd[pending])
        ok = armijo | wolfe
        done = pending[ok]
        u_new[done], f_new[done], g_new[done] = x[ok], f_try[ok], g_try[ok]
        pending = pending[~ok]
        if not len(pending):
            break
        t[pending] *= 0.5
    found = np.ones(len(idx), dtype=bool)
    found[pending] = False
    return u_new, f_new, g_new, found


def solve_path(basis: Basis, pr: Problems, max_iter: int, tol: float) -> PathFit:
    """Minimise every problem of the batch by L-BFGS with per-problem steps; converged problems leave the batch."""
    batch = _Batch(basis, pr)
    P, nvar = batch.scale.shape
    everyone = np.arange(P)
    u = np.zeros((P, nvar))
    f, g = batch.evaluate(u, everyone)
    Sh, Yh = np.zeros((P, HISTORY, nvar)), np.zeros((P, HISTORY, nvar))
    rho, newest = np.zeros((P, HISTORY)), np.zeros(P, dtype=np.int64)
    n_iter = np.zeros(P, dtype=np.int64)
    stuck = np.zeros(P, dtype=bool)
    converged = np.zeros(P, dtype=bool)
    for it in range(max_iter + 1):
        idx = np.flatnonzero(~converged & ~stuck & (n_iter < max_iter))
        if not len(idx):
            break
        if it in RESCALE_AT:  # the curvature has moved away from its starting value: follow it
            ratio = batch.rescale(idx)
            u[idx], g[idx] = u[idx] * ratio, g[idx] / ratio
            Sh[idx], Yh[idx] = Sh[idx] * ratio[:, None, :], Yh[idx] / ratio[:, None, :]
        d = _two_loop(g[idx], Sh[idx], Yh[idx], rho[idx], newest[idx])
        gd = np.einsum("pn,pn->p", g[idx], d)
        uphill = gd >= 0  # a stale history: fall back to steepest descent
        d[uphill], gd[uphill] = -g[idx][uphill], -np.einsum("pn,pn->p", g[idx][uphill], g[idx][uphill])
        done = np.abs(g[idx] / batch.scale[idx]).max(axis=1) <= tol  # scikit-learn's gtol, on the raw gradient
        converged[idx[done]] = True
        idx, d, gd = idx[~done], d[~done], gd[~done]
        if not len(idx):
            continue
        u_new, f_new, g_new, found = _line_search(batch, u[idx], f[idx], d, gd, idx)
        stuck[idx[~found]] = True  # no decrease left at float precision: the problem is as solved as it gets
        acc, rows = idx[found], np.flatnonzero(found)
        s, y = u_new[rows] - u[acc], g_new[rows] - g[acc]
        sy = np.einsum("pn,pn->p", s, y)
        good = sy > 1e-12 * np.einsum("pn,pn->p", y, y)
        slot = (newest[acc] + 1) % HISTORY
        upd = acc[good]
        Sh[upd, slot[good]], Yh[upd, slot[good]], rho[upd, slot[good]] = s[good], y[good], 1.0 / sy[good]
        newest[upd] = slot[good]
        u[acc], f[acc], g[acc], n_iter[acc] = u_new[rows], f_new[rows], g_new[rows], n_iter[acc] + 1
    W, b = batch.split(u, everyone)
    return PathFit(W, b, n_iter, converged)
