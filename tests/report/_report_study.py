"""A synthetic study written through the results API, for the report tests.

2 datasets (binary, multiclass) x 3 models (a weak ImageNet baseline, a strong foundation model, and that model's
':random' control) x 2 probes x 2 train fractions x 2 repeats. Scores are simulated so that the ranking is known:
toy_fm > toy_imagenet > toy_fm:random. One cell's primary metric is reported missing (NAN_CELL).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fmprobe.metrics import PRIMARY_METRIC, compute_all
from fmprobe.results import ResultRow, append_rows, cell_id, save_predictions

DATASETS = {
    "synth_lesions": ("binary", ["benign", "malignant"]),
    "synth_tissue": ("multiclass", ["fat", "muscle", "tumour"]),
}
MODELS = {("toy_imagenet", "pretrained"): 1.0, ("toy_fm", "pretrained"): 2.2, ("toy_fm", "random"): 0.15}
PROBES = {"logreg": 0.25, "knn": 0.0}
N_TEST, N_VAL = 150, 80
NAN_CELL = ("synth_lesions", "toy_fm", "random", "knn", 1.0, 0)  # its primary metric is reported missing
NAN_REASON = "only one class among the predictions (synthetic)"


def _scores(rng: np.random.Generator, y: np.ndarray, k: int, strength: float) -> np.ndarray:
    logits = strength * np.eye(k)[y] + rng.normal(size=(len(y), k))
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def build_study(results_dir: Path) -> None:
    rows: list[ResultRow] = []
    for ds_i, (ds, (task, classes)) in enumerate(DATASETS.items()):
        k = len(classes)
        y_test = np.random.default_rng(ds_i).integers(0, k, N_TEST)
        y_val = np.random.default_rng(100 + ds_i).integers(0, k, N_VAL)
        ids = [f"{ds}/img_{i:04d}.png" for i in range(N_TEST)]
        primary = PRIMARY_METRIC[task]
        for (backbone, weights), quality in MODELS.items():
            for probe, bonus in PROBES.items():
                for fraction in (0.1, 1.0):
                    for repeat in (0, 1):
                        seed = repeat
                        strength = (quality + bonus) * (0.55 if fraction < 1 else 1.0)
                        rng = np.random.default_rng(
                            [ds_i, int(quality * 100), int(bonus * 100), int(fraction * 10), repeat]
                        )
                        score = _scores(rng, y_test, k, strength)
                        val = compute_all(y_val, _scores(rng, y_val, k, strength), task, metrics=[primary])
                        key = dict(
                            dataset=ds,
                            backbone=backbone,
                            weights=weights,
                            readout="cls",
                            resolution=224,
                            probe=probe,
                            train_fraction=fraction,
                            repeat=repeat,
                            seed=seed,
                            fingerprint=f"fp-{backbone}-{weights}-{ds}",
                        )
                        cid = cell_id(**key)
                        pred = save_predictions(
                            results_dir, cid, ids, y_test, score, {"task": task, "class_names": classes, **key}
                        )
                        metrics = compute_all(y_test, score, task, n_resamples=200, seed=0)
                        for name, mv in metrics.items():
                            missing = (ds, backbone, weights, probe, fraction, repeat) == NAN_CELL and name == primary
                            rows.append(
                                ResultRow(
                                    task=task,
                                    params=json.dumps({"C": 1.0} if probe == "logreg" else {"k": 20}),
                                    metric=name,
                                    value=np.nan if missing else mv.value,
                                    ci_low=np.nan if missing else mv.ci_low,
                                    ci_high=np.nan if missing else mv.ci_high,
                                    missing_reason=NAN_REASON if missing else "",
                                    is_primary=name == primary,
                                    n_train=int(1000 * fraction),
                                    n_test=N_TEST,
                                    val_score=val[primary].value,
                                    cell_id=cid,
                                    predictions=pred,
                                    imagenet_baseline=(backbone, weights) == ("toy_imagenet", "pretrained"),
                                    **key,
                                )
                            )
    append_rows(results_dir, rows)
