"""Probe speed and memory benchmark (a script, not a test): ``python bench/probe_speed.py [--quick]``.

For logreg and kNN, on synthetic 20k x 5k x 768 features (train x val x dim, 10 classes) and on the real
PneumoniaMNIST features (EfficientNet-Lite0 ImageNet, 64 px, 1280 dims; extracted once into ``--cache``), at 1
and at 2 BLAS threads (threadpoolctl), both sides measured in the same run:

- logreg: LogisticProbe's warm-started C path (17 values) against (a) a loop of fresh scikit-learn
  ``LogisticRegression`` fits, one per C, and (b) ``LogisticRegressionCV`` with the validation rows as its one
  predefined fold (``PredefinedSplit``, ``refit=False``: fitted on train only, like the probe). Asserted: the same
  chosen C as the loop, and test metrics equal to the scikit-learn fit at that C within 1e-3.
- kNN: KNNProbe's one-pass all-k sweep against (a) a loop of ``KNeighborsClassifier`` fits over the same
  (k, voting) grid and (b) ``GridSearchCV`` over that grid with the same predefined split. Asserted: the same
  choice and validation scores.
- memory: kNN and logreg on 100k x 1024 float16 features in a child process each (peak RSS against 4 GiB).

The CPU model and the ratios are printed last.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fmprobe.probes import KNNProbe, LogisticProbe  # noqa: E402
from fmprobe.probes.base import select_best  # noqa: E402

GIB = 1024**3
MEMORY_TARGET_GIB = 4.0
METRIC_TOL = 1e-3  # test metrics of the probe and of scikit-learn's fit at the chosen C
REAL = "/work/shared/data/pneumoniamnist.npz"


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


def synthetic(n_train: int, n_val: int, d: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return [structured_features(n, d, 10, seed=s) for n, s in ((n_train, 3), (n_val, 4), (n_val, 5))]


def real_features(path: str, cache: Path) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """(train, val, test) Lite0 features of a MedMNIST file, extracted once into ``cache``; None when absent."""
    if not Path(path).exists():
        print(f"[real] {path} is absent: real-feature rows skipped")
        return None
    from fmprobe import extract_features
    from fmprobe.store import FeatureFile

    result = extract_features(path, "efficientnet_lite0_imagenet", resolution=64, out=cache, num_workers=0,
                              progress=False)  # fmt: skip
    features = FeatureFile(result.path)
    return [(s.features, s.labels.ravel()) for s in (features.load(k, dtype="float32") for k in ("train", "val", "test"))]


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def predefined(X: np.ndarray, Xv: np.ndarray, y: np.ndarray, yv: np.ndarray):
    """Train + validation stacked, with the validation rows as the one predefined fold."""
    from sklearn.model_selection import PredefinedSplit

    fold = np.r_[np.full(len(X), -1), np.zeros(len(Xv), dtype=int)]
    return np.vstack([X, Xv]), np.r_[y, yv], PredefinedSplit(fold)


def bench_logreg(name: str, splits, threads: int) -> dict[str, float]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from threadpoolctl import threadpool_limits

    (X, y), (Xv, yv), (Xt, yt) = splits
    probe, t_ours = timed(lambda: LogisticProbe(n_threads=threads).fit(X, y, eval_set=(Xv, yv)))
    metric = probe._selection_metric()
    mean, scale = probe.mean_.astype(np.float32), probe.scale_.astype(np.float32)
    Xs, Xvs, Xts = ((A - mean) / scale for A in (X, Xv, Xt))  # the same standardised inputs, outside the timing
    Cs = [r["C"] for r in probe.search_results_]
    with warnings.catch_warnings(), threadpool_limits(limits=threads):
        warnings.simplefilter("ignore", ConvergenceWarning)
        fits, t_loop = timed(lambda: [LogisticRegression(C=C).fit(Xs, y) for C in Cs])
        ref = [{"C": C, "score": metric(yv, f.predict_proba(Xvs))} for C, f in zip(Cs, fits, strict=True)]
        Xa, ya, split = predefined(Xs, Xvs, y, yv)
        scorer = lambda est, A, b: metric(b, est.predict_proba(A))  # noqa: E731 - the probe's selection metric
        cv, t_cv = timed(lambda: LogisticRegressionCV(Cs=Cs, cv=split, scoring=scorer, refit=False).fit(Xa, ya))
    best = select_best(ref)
    test_ours, test_ref = metric(yt, probe.predict_proba(Xt)), metric(yt, fits[best].predict_proba(Xts))
    print(f"[logreg {name} {threads}t] {len(y)} x {len(yv)} x {X.shape[1]}, {len(np.unique(y))} classes, "
          f"{len(Cs)} C values")  # fmt: skip
    print(f"[logreg {name} {threads}t] path {t_ours:.2f} s ({sum(r['n_iter'] for r in probe.search_results_)} "
          f"iterations), C={probe.best_params_['C']:.4g}, test {metric.name} {test_ours:.4f}")  # fmt: skip
    print(f"[logreg {name} {threads}t] fresh-fit loop {t_loop:.2f} s ({sum(int(f.n_iter_[0]) for f in fits)} "
          f"iterations), C={Cs[best]:.4g}, test {test_ref:.4f}; LogisticRegressionCV {t_cv:.2f} s, C={cv.C_[0]:.4g}")  # fmt: skip
    assert probe.best_params_["C"] == Cs[best], "the warm-started path chose another C than the fresh fits"
    assert abs(test_ours - test_ref) <= METRIC_TOL, f"test {metric.name} {test_ours} vs scikit-learn {test_ref}"
    return {"loop": t_loop / t_ours, "cv": t_cv / t_ours, "ours": t_ours}


def bench_knn(name: str, splits, threads: int) -> dict[str, float]:
    from sklearn.model_selection import GridSearchCV
    from sklearn.neighbors import KNeighborsClassifier
    from threadpoolctl import threadpool_limits

    (X, y), (Xv, yv), _ = splits
    with threadpool_limits(limits=threads):
        probe, t_ours = timed(lambda: KNNProbe().fit(X, y, eval_set=(Xv, yv)))
        metric, T = probe._selection_metric(), probe.temperature
        weight = {"majority": "uniform", "weighted": lambda dist: np.exp((1.0 - dist) / T)}

        def loop():
            rows = []
            for row in probe.search_results_:  # the same grid, in the same (most regularised first) order
                clf = KNeighborsClassifier(n_neighbors=row["k"], metric="cosine", weights=weight[row["voting"]],
                                           algorithm="brute")  # fmt: skip
                rows.append({**row, "score": metric(yv, clf.fit(X, y).predict_proba(Xv))})
            return rows

        ref, t_loop = timed(loop)
        Xa, ya, split = predefined(X, Xv, y, yv)
        grid = {"n_neighbors": sorted({r["k"] for r in ref}), "weights": list(weight.values())}
        scorer = lambda est, A, b: metric(b, est.predict_proba(A))  # noqa: E731
        search = GridSearchCV(KNeighborsClassifier(metric="cosine", algorithm="brute"), grid, cv=split,
                              scoring=scorer, refit=False)  # fmt: skip
        _, t_cv = timed(lambda: search.fit(Xa, ya))
    chosen = ref[select_best(ref)]
    diff = max(abs(a["score"] - b["score"]) for a, b in zip(probe.search_results_, ref, strict=True))
    print(f"[knn {name} {threads}t] {len(y)} x {len(yv)} x {X.shape[1]}, {len(ref)} (k, voting) candidates: sweep "
          f"{t_ours:.2f} s, chose {probe.best_params_}; loop {t_loop:.2f} s, chose k={chosen['k']} "
          f"{chosen['voting']}; GridSearchCV {t_cv:.2f} s; max |val score difference| {diff:.1e}")  # fmt: skip
    assert probe.best_params_ == {"k": chosen["k"], "voting": chosen["voting"]} and diff < 1e-9
    return {"loop": t_loop / t_ours, "cv": t_cv / t_ours, "ours": t_ours}


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


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, one thread, no real features (a smoke run)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "fmprobe-bench",
                        help="where the real features are extracted once")  # fmt: skip
    parser.add_argument("--skip-memory", action="store_true", help="leave out the 100k x 1024 memory rows")
    parser.add_argument("--problems", default="synthetic,real", help="comma-separated: synthetic, real")
    parser.add_argument("--probes", default="logreg,knn", help="comma-separated: logreg, knn")
    parser.add_argument("--threads", default="1,2", help="comma-separated BLAS thread counts")
    parser.add_argument("--child", choices=["knn", "logreg"], help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=100_000, help=argparse.SUPPRESS)
    parser.add_argument("--d", type=int, default=1024, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.n, args.d)
        return
    sizes, mem_size = ((2000, 500, 128), (20_000, 256)) if args.quick else ((20_000, 5000, 768), (100_000, 1024))
    threads = (1,) if args.quick else tuple(int(t) for t in args.threads.split(","))
    benches = {"logreg": bench_logreg, "knn": bench_knn}
    wanted = args.problems.split(",")
    problems = {"synthetic": synthetic(*sizes)} if "synthetic" in wanted else {}
    real = None if args.quick or "real" not in wanted else real_features(REAL, args.cache)
    if real is not None:
        problems["pneumoniamnist-lite0"] = real
    print(f"cores: {os.cpu_count()}; numpy {np.__version__}")
    ratios = {}
    for name, splits in problems.items():
        for t in threads:
            for probe in args.probes.split(","):
                ratios[(probe, name, t)] = benches[probe](name, splits, t)
    peaks = {} if args.skip_memory else {name: bench_memory(name, *mem_size) for name in ("knn", "logreg")}
    print(f"CPU: {cpu_model()} ({os.cpu_count()} cores)")
    for (probe, name, t), r in ratios.items():
        print(f"RATIO {probe} {name} {t} thread(s): {r['loop']:.1f}x the naive scikit-learn loop, "
              f"{r['cv']:.1f}x {'LogisticRegressionCV' if probe == 'logreg' else 'GridSearchCV'} (ours {r['ours']:.2f} s; "
              "target >= 10x)")  # fmt: skip
    for name, peak in peaks.items():
        verdict = "OK" if peak < MEMORY_TARGET_GIB else "OVER"
        size = f"{mem_size[0]} x {mem_size[1]} float16"
        print(f"PEAK RSS {name} on {size}: {peak:.2f} GiB (target < {MEMORY_TARGET_GIB:.0f} GiB) {verdict}")


if __name__ == "__main__":
    main()
