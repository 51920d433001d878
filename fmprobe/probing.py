"""`fmprobe probe`: fit every requested probe on cached features and append result rows (resumable by cell).

A cell is (feature file, readout, probe, train fraction, repeat). Hyper-parameters are chosen on the validation
split only; the test split is touched once, after fitting, to score the chosen model. Every test metric gets a
stratified bootstrap CI, and the per-sample predictions are saved so any number can be recomputed.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from fmprobe.errors import FmprobeError, ProbeError
from fmprobe.metrics import PRIMARY_METRIC, compute_all
from fmprobe.probes import PROBES, make_probe
from fmprobe.results import ResultRow, append_rows, cell_id, done_cells, save_predictions
from fmprobe.store import FeatureFile

DEFAULT_PROBES = ("logreg", "knn", "lgbm")
STOCHASTIC_PROBES = {"lgbm"}  # their fit depends on the seed, so repeats differ even on all the data
Log = Callable[[str], None]


@dataclass(frozen=True)
class ProbeRun:
    results_dir: Path
    cells_run: int
    cells_skipped: int
    rows_written: int


def find_feature_files(paths: Iterable[str | Path]) -> list[Path]:
    """Feature files named directly, or all ``*.h5`` below the folders given (sorted, no duplicates)."""
    found: list[Path] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            found.extend(sorted(path.rglob("*.h5")))
        elif path.exists():
            found.append(path)
        else:
            raise FmprobeError(f"{path}: no such feature file or folder. `fmprobe extract` prints the paths it writes.")
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise FmprobeError(f"no feature files (*.h5) in {', '.join(map(str, paths))}; run `fmprobe extract` first.")
    return unique


def subsample(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of a stratified ``fraction`` of the training set (every class keeps at least one sample).

    Multilabel rows are stratified by their first positive label (a missing entry, -1, counts as 0).
    """
    if fraction >= 1.0:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    if labels.ndim == 1:
        strata = labels
    else:
        positive = labels > 0  # -1 (missing) and 0 are both "not positive" for the stratum key
        strata = positive.argmax(axis=1) * positive.any(axis=1)
    chosen = []
    for value in np.unique(strata):
        members = np.flatnonzero(strata == value)
        take = max(1, int(round(fraction * len(members))))
        chosen.append(rng.choice(members, size=take, replace=False))
    return np.sort(np.concatenate(chosen))


def _weights_label(features: FeatureFile) -> str:
    return str(features.attrs.get("weights_label", "random" if features.backbone.endswith(":random") else "pretrained"))


def probe_features(
    features: Sequence[str | Path],
    *,
    probes: Sequence[str] = DEFAULT_PROBES,
    readouts: Sequence[str] | None = None,
    train_fractions: Sequence[float] = (1.0,),
    repeats: int = 1,
    seed: int = 0,
    out: str | Path = "results",
    force: bool = False,
    n_resamples: int = 1000,
    probe_params: dict[str, dict[str, object]] | None = None,
    progress: bool = True,
    log: Log = lambda message: print(message, file=sys.stderr),
) -> ProbeRun:
    """Probe every feature file x readout x probe x train fraction x repeat; skip cells already in ``out``."""
    for name in probes:
        PROBES.get(name)  # unknown names fail before any work, with suggestions
    bad = [f for f in train_fractions if not 0 < f <= 1]
    if bad:
        raise FmprobeError(f"--train-fraction {bad}: fractions must be in (0, 1].")
    if repeats < 1:
        raise FmprobeError(f"--repeats {repeats}: must be at least 1.")
    out = Path(out)
    files = [FeatureFile(p) for p in find_feature_files(features)]
    plan = []
    for feature_file in files:
        chosen = list(readouts) if readouts else list(feature_file.readouts)
        missing = [r for r in chosen if r not in feature_file.readouts]
        if missing:
            raise FmprobeError(
                f"{feature_file.path}: readout(s) {missing} not extracted; stored: {', '.join(feature_file.readouts)}."
            )
        for readout in chosen:
            for probe in probes:
                for fraction in train_fractions:
                    n_rep = repeats if (fraction < 1.0 or probe in STOCHASTIC_PROBES) else 1
                    for repeat in range(n_rep):
                        plan.append((feature_file, readout, probe, float(fraction), repeat))
    finished = set() if force else done_cells(out)
    todo, skipped = [], 0
    for feature_file, readout, probe, fraction, repeat in plan:
        cid = _cell(feature_file, readout, probe, fraction, repeat, seed)
        if cid in finished:
            skipped += 1
        else:
            todo.append((cid, feature_file, readout, probe, fraction, repeat))
    if skipped:
        log(f"{skipped} of {len(plan)} cells already in {out}; running {len(todo)} (use --force to redo them)")
    rows_written = 0
    cache: dict[tuple[Path, str], dict[str, object]] = {}
    bar = tqdm(todo, unit="cell", desc="probing", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    for cid, feature_file, readout, probe, fraction, repeat in bar:
        bar.set_postfix_str(f"{feature_file.dataset} {feature_file.backbone} {readout} {probe} {fraction:g}#{repeat}")
        key = (feature_file.path, readout)
        if key not in cache:
            cache.clear()  # one file's splits in memory at a time
            cache[key] = {s: feature_file.load(s, readout) for s in ("train", "val", "test")}
        rows = _run_cell(cid, feature_file, cache[key], readout, probe, fraction, repeat, seed, out, n_resamples, probe_params or {})
        append_rows(out, rows)
        rows_written += len(rows)
    bar.close()
    return ProbeRun(out, len(todo), skipped, rows_written)


def _cell(feature_file: FeatureFile, readout: str, probe: str, fraction: float, repeat: int, seed: int) -> str:
    return cell_id(
        dataset=feature_file.dataset, backbone=feature_file.backbone, weights=_weights_label(feature_file),
        readout=readout, resolution=feature_file.resolution, probe=probe, train_fraction=fraction, repeat=repeat,
        seed=seed, fingerprint=feature_file.key,
    )  # fmt: skip


def _run_cell(
    cid: str,
    feature_file: FeatureFile,
    splits: dict[str, object],
    readout: str,
    probe_name: str,
    fraction: float,
    repeat: int,
    seed: int,
    out: Path,
    n_resamples: int,
    probe_params: dict[str, dict[str, object]],
) -> list[ResultRow]:
    train, val, test = splits["train"], splits["val"], splits["test"]  # type: ignore[assignment]
    task = feature_file.task
    cell_seed = seed + 1000 * repeat
    index = subsample(train.labels, fraction, cell_seed)  # type: ignore[attr-defined]
    n_classes = len(feature_file.class_names)
    params: dict[str, object] = {"task": task, **probe_params.get(probe_name, {})}
    if task != "multilabel":
        params["classes"] = np.arange(n_classes)
    probe = make_probe(probe_name, **params)
    if "random_state" in probe.get_params():
        probe.set_params(random_state=cell_seed)
    try:
        probe.fit(train.features[index], train.labels[index], eval_set=(val.features, val.labels))  # type: ignore[attr-defined]
    except ProbeError as err:
        raise ProbeError(f"{feature_file.path} ({readout}, {probe_name}, fraction {fraction}): {err}") from err
    scores = probe.predict_proba(test.features)  # type: ignore[attr-defined]
    primary = feature_file.primary_metric or PRIMARY_METRIC[task]
    values = compute_all(test.labels, scores, task, n_resamples=n_resamples, seed=seed)  # type: ignore[attr-defined]
    prediction_path = save_predictions(
        out, cid, test.ids, test.labels, scores,  # type: ignore[attr-defined]
        {"task": task, "class_names": list(feature_file.class_names), "dataset": feature_file.dataset,
         "backbone": feature_file.backbone, "readout": readout, "probe": probe_name, "feature_file": str(feature_file.path)},
    )  # fmt: skip
    chosen = {k: (v.item() if hasattr(v, "item") else v) for k, v in probe.best_params_.items()}
    val_score = float(probe.val_score_) if probe.val_score_ is not None else float("nan")
    rows = []
    for metric, value in values.items():
        rows.append(
            ResultRow(
                dataset=feature_file.dataset, task=task, backbone=feature_file.backbone.removesuffix(":random"),
                weights=_weights_label(feature_file), readout=readout, resolution=feature_file.resolution,
                probe=probe_name, params=json.dumps(chosen, sort_keys=True, default=str), train_fraction=fraction,
                repeat=repeat, seed=seed, metric=metric,
                value=float("nan") if value.value is None else float(value.value),
                ci_low=float("nan") if value.ci_low is None else float(value.ci_low),
                ci_high=float("nan") if value.ci_high is None else float(value.ci_high),
                missing_reason=value.reason or "", is_primary=metric == primary, n_train=int(len(index)),
                n_test=int(len(test.labels)), val_score=val_score, fingerprint=feature_file.key, cell_id=cid,  # type: ignore[attr-defined]
                predictions=prediction_path,
            )  # fmt: skip
        )
    return rows
