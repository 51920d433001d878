"""Probe speed and memory benchmark (a script, not a test): ``python bench/probe_speed.py [--quick]``.

1. kNN: the one-pass all-k sweep of KNNProbe against a naive loop of scikit-learn KNeighborsClassifier
   fits over the same (k, voting) grid (voting "weighted" = a callable exp(sim / T) weight), on
   structured synthetic features. Checks the same (k, voting) is chosen and the same validation scores.
2. Logistic regression: LogisticProbe's warm-started C path against fresh scikit-learn fits over the same
   grid on the same standardised features. Checks the same C is chosen.
3. Memory: fits kNN and logreg probes (with a validation set, then predicts a test set) on 100k x 1024
   float16 features in a child process each and reports the child's whole-process peak RSS (VmHWM:
   interpreter, imports, data and probe) against 4 GiB.

The last lines printed are the ratios and peaks.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fmprobe.metrics import get_metric  # noqa: E402
from fmprobe.probes import KNNProbe, LogisticProbe  # noqa: E402
from fmprobe.probes.base import select_best  # noqa: E402

GIB = 1024**3
MEMORY_TARGET_GIB = 4.0


def structured_features(n: int, d: int, n_classes: int, seed: int, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Class signal in a 32-dim subspace, mixed into d dims, plus noise; written blockwise into ``dtype``."""
    mix_rng = np.random.default_rng(12345)  # the same "backbone" for every split
    centres = mix_rng.normal(size=(n_classes, 32))
    mixing = mix_rng.normal(size=(32, d)) / np.sqrt(32)
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    X = np.empty((n, d), dtype=dtype)
    for i in range(0, n, 2048):  # small blocks: building the data must not set the memory peak
        yb = y[i : i + 2048]
        z = centres[yb] * 0.35 + rng.normal(size=(len(yb), 32))
        X[i : i + 2048] = np.maximum(z @ mixing + 0.5 * rng.normal(size=(len(yb), d)), 0)  # ReLU-like, non-negative
    return X, y


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def bench_knn(n_train: int, n_val: int, d: int) -> float:
    from sklearn.neighbors import KNeighborsClassifier

    X, y = structured_features(n_train, d, 10, seed=1)
    Xv, yv = structured_features(n_val, d, 10, seed=2)
    probe, t_ours = timed(lambda: KNNProbe().fit(X, y, eval_set=(Xv, yv)))
    metric = get_metric("balanced_accuracy")
    T = probe.temperature

    def naive():
        rows = []
        for row in probe.search_results_:  # the same grid, in the same (most regularised first) order
            weights = "uniform" if row["voting"] == "majority" else (lambda dist: np.exp((1.0 - dist) / T))
            clf = KNeighborsClassifier(n_neighbors=row["k"], metric="cosine", weights=weights, algorithm="brute")
            rows.append({**row, "score": metric(yv, clf.fit(X, y).predict_proba(Xv))})
        return rows

    ref, t_naive = timed(naive)
    chosen_ref = ref[select_best(ref)]
    max_diff = max(abs(a["score"] - b["score"]) for a, b in zip(probe.search_results_, ref, strict=True))
    print(f"[knn] {n_train} train x {n_val} val x {d} features, {len(ref)} (k, voting) candidates")
    print(f"[knn] ours: {t_ours:.2f} s, chose {probe.best_params_} val={probe.val_score_:.4f}")
    chose = f"k={chosen_ref['k']} voting={chosen_ref['voting']} val={chosen_ref['score']:.4f}"
    print(f"[knn] sklearn loop: {t_naive:.2f} s, chose {chose}")
    same = probe.best_params_ == {"k": chosen_ref["k"], "voting": chosen_ref["voting"]}
    print(f"[knn] same choice: {same}; max |score difference| over the grid: {max_diff:.2e}")
    assert same and max_diff < 1e-9, "kNN sweep disagrees with scikit-learn"
    return t_naive / t_ours


def bench_logreg(n_train: int, n_val: int, d: int) -> float:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    X, y = structured_features(n_train, d, 10, seed=3)
    Xv, yv = structured_features(n_val, d, 10, seed=4)
    probe, t_ours = timed(lambda: LogisticProbe().fit(X, y, eval_set=(Xv, yv)))
    metric = get_metric("balanced_accuracy")
    mean, scale = probe.mean_.astype(np.float32), probe.scale_.astype(np.float32)
    Xs, Xvs = (X - mean) / scale, (Xv - mean) / scale  # the same standardised inputs, prepared outside the timing

    def naive():
        rows = []
        with warnings.catch_warnings(), threadpool_limits(limits=probe.n_threads):  # as LogisticProbe
            warnings.simplefilter("ignore", ConvergenceWarning)
            for row in probe.search_results_:
                clf = LogisticRegression(C=row["C"], max_iter=probe.max_iter, tol=probe.tol).fit(Xs, y)
                score = metric(yv, clf.predict_proba(Xvs))
                rows.append({"C": row["C"], "score": score, "n_iter": int(clf.n_iter_[0])})
        return rows

    ref, t_naive = timed(naive)
    chosen_ref = ref[select_best(ref)]
    iters_ours = sum(r["n_iter"] for r in probe.search_results_)
    iters_ref = sum(r["n_iter"] for r in ref)
    max_diff = max(abs(a["score"] - b["score"]) for a, b in zip(probe.search_results_, ref, strict=True))
    print(f"[logreg] {n_train} train x {n_val} val x {d} features, {len(ref)} C values")
    ours = f"C={probe.best_params_['C']:.4g} val={probe.val_score_:.4f}"
    print(f"[logreg] warm path: {t_ours:.2f} s ({iters_ours} lbfgs iterations), chose {ours}")
    theirs = f"C={chosen_ref['C']:.4g} val={chosen_ref['score']:.4f}"
    print(f"[logreg] fresh fits: {t_naive:.2f} s ({iters_ref} iterations), chose {theirs}")
    same = probe.best_params_["C"] == chosen_ref["C"]
    print(f"[logreg] same choice: {same}; max |val score difference| over the grid: {max_diff:.2e}")
    return t_naive / t_ours


def vm_hwm() -> int:
    """Peak RSS of this process in bytes, from /proc (getrusage's ru_maxrss would include the parent's
    RSS at fork time: Linux keeps it across execve); falls back to ru_maxrss off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def child(probe_name: str, n_train: int, d: int) -> None:
    """Fit one probe on float16 features with a validation set and predict a test set; print peak RSS."""
    X, y = structured_features(n_train, d, 10, seed=5, dtype=np.float16)
    Xv, yv = structured_features(5000, d, 10, seed=6, dtype=np.float16)
    Xt, _ = structured_features(5000, d, 10, seed=7, dtype=np.float16)
    data_peak = vm_hwm()
    probe = KNNProbe() if probe_name == "knn" else LogisticProbe()
    t = time.perf_counter()
    probe.fit(X, y, eval_set=(Xv, yv)).predict_proba(Xt)
    seconds = time.perf_counter() - t
    print(json.dumps({"peak": vm_hwm(), "data": data_peak, "seconds": seconds, "params": probe.best_params_}))


def bench_memory(probe_name: str, n_train: int, d: int) -> float:
    cmd = [sys.executable, __file__, "--child", probe_name, "--n", str(n_train), "--d", str(d)]
    out = subprocess.run(
        cmd, check=True, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}
    )
    report = json.loads(out.stdout.strip().splitlines()[-1])
    print(
        f"[memory] {probe_name}: {n_train} x {d} float16 train (+5k val, 5k test): child peak RSS "
        f"{report['peak'] / GIB:.2f} GiB (imports + data alone: {report['data'] / GIB:.2f} GiB; "
        f"fit + predict {report['seconds']:.1f} s; chose {report['params']})"
    )
    return report["peak"] / GIB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    parser.add_argument("--child", choices=["knn", "logreg"], help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=100_000, help=argparse.SUPPRESS)
    parser.add_argument("--d", type=int, default=1024, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.n, args.d)
        return
    if args.quick:
        knn_size, lr_size, mem_size = (4000, 1000, 256), (2000, 500, 256), (20_000, 1024)
    else:
        knn_size, lr_size, mem_size = (20_000, 5000, 768), (10_000, 2000, 768), (100_000, 1024)
    print(f"threads: {os.cpu_count()} cores; numpy {np.__version__}")
    knn_ratio = bench_knn(*knn_size)
    lr_ratio = bench_logreg(*lr_size)
    peaks = {name: bench_memory(name, *mem_size) for name in ("knn", "logreg")}
    print(f"RATIO knn all-k sweep vs sklearn KNeighborsClassifier loop: {knn_ratio:.1f}x (target >= 10x)")
    print(f"RATIO logreg warm C path vs fresh sklearn fits: {lr_ratio:.1f}x")
    for name, peak in peaks.items():
        verdict = "OK" if peak < MEMORY_TARGET_GIB else "OVER"
        size = f"{mem_size[0]} x {mem_size[1]} float16"
        print(f"PEAK RSS {name} on {size}: {peak:.2f} GiB (target < {MEMORY_TARGET_GIB:.0f} GiB) {verdict}")


if __name__ == "__main__":
    main()
