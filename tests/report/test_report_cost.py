"""The cost section and the recommendation's cheapest tied configuration, on constructed feature files + results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fmprobe.metrics import bootstrap_ci, get_metric
from fmprobe.report import write_report
from fmprobe.report.analysis import with_models
from fmprobe.report.cost import NOT_RECORDED, cost_table, feature_costs, pareto_front
from fmprobe.report.recommend import Verdict, recommend
from fmprobe.results import ResultRow, append_rows, cell_id, read_results, save_predictions
from fmprobe.store import Fingerprint, SplitLayout, write_feature_file
from fmprobe.store.journal import Batch

N_TEST = 200
B = 300


def feature_file(path: Path, backbone: str, width: int, **cost: object) -> Path:
    """A real (tiny) feature file of ``width``-dimensional features with the given cost attributes."""
    layouts, batches = {}, []
    for split, size in {"train": 6, "test": 4}.items():
        layouts[split] = SplitLayout(tuple(f"{split}/{i}" for i in range(size)), np.arange(size) % 2)
        batches.append(Batch(split, 0, size, {}, {"cls": np.zeros((size, width), np.float32)}))
    fp = Fingerprint("ds", "dig", backbone, "sha256:x", {}, 224, ("cls",), "fp32", "float32")
    attrs = {"fingerprint": fp.to_json(), "key": fp.key, "schema_version": 1, "task": "binary",
             "class_names": json.dumps(["a", "b"]), "readouts": json.dumps(["cls"]), **cost}  # fmt: skip
    write_feature_file(path, attrs, layouts, ("cls",), {"cls": width}, "float32", batches, {})
    return path


def _scores(y: np.ndarray, strength: float, noise: int) -> np.ndarray:
    p = 1 / (1 + np.exp(-(strength * (2 * y - 1) + np.random.default_rng(noise).normal(size=len(y)))))
    return np.column_stack([1 - p, p])


def study(tmp_path: Path, cells: list[tuple[str, float, int, float, int, dict]]) -> Path:
    """(model, strength, noise, val score, width, cost attributes) per cell: one feature file and one logreg cell."""
    results = tmp_path / "results"
    tmp_path.mkdir(parents=True, exist_ok=True)
    y = np.random.default_rng(0).integers(0, 2, N_TEST)
    ids = [f"t/{i:04d}.png" for i in range(N_TEST)]
    rows = []
    for model, strength, noise, val, width, cost in cells:
        features = feature_file(tmp_path / f"{model}.h5", model, width, **cost)
        key = dict(dataset="ds", backbone=model, weights="pretrained", readout="cls", resolution=224, probe="logreg",
                   train_fraction=1.0, repeat=0, seed=0, fingerprint=f"fp-{model}")  # fmt: skip
        score = _scores(y, strength, noise)
        pred = save_predictions(results, cell_id(**key), ids, y, score,
                                {"task": "binary", **key, "feature_file": str(features)})  # fmt: skip
        ci = bootstrap_ci("roc_auc", y, score, n_resamples=100, seed=0)
        rows.append(ResultRow(task="binary", params=json.dumps({"C": 1.0}), metric="roc_auc",
                              value=get_metric("roc_auc")(y, score), ci_low=ci.low, ci_high=ci.high, missing_reason="",
                              is_primary=True, n_train=6, n_test=N_TEST, val_score=val, cell_id=cell_id(**key),
                              predictions=pred, n_val=100, **key))  # fmt: skip
    append_rows(results, rows)
    return results


FAST = {"parameters": 5_300_000, "images_per_s": 200.0, "extraction_seconds": 12.5, "extraction_device": "cpu"}
SLOW = {"parameters": 86_000_000, "images_per_s": 20.0, "extraction_seconds": 125.0, "extraction_device": "cuda:0"}
# big_fm is best on validation; small_fm scores the same on test (same strength and noise) at a tenth of the cost.
TIED = [("big_fm", 2.0, 1, 0.95, 768, SLOW), ("small_fm", 2.0, 1, 0.90, 320, FAST), ("weak_fm", 0.2, 2, 0.7, 64, FAST)]


def test_cost_table_reads_the_feature_files_and_says_what_is_not_recorded(tmp_path: Path) -> None:
    results = study(tmp_path, [TIED[1], ("old_fm", 1.0, 3, 0.8, 384, {})])  # an old file: no cost attributes
    costs = feature_costs(with_models(read_results(results)))
    new, old = costs[("ds", "small_fm", 224)], costs[("ds", "old_fm", 224)]
    assert (new.parameters, new.widths, new.images_per_s, new.seconds, new.device) == (5_300_000, {"cls": 320}, 200.0, 12.5, "cpu")
    assert new.n_images == 10 and new.seconds_per_image == pytest.approx(0.005)
    assert (old.parameters, old.images_per_s, old.seconds, old.widths) == (None, None, None, {"cls": 384})
    table = cost_table(costs)
    rows = {r[0].text: [c.text for c in r[1:]] for r in table.rows}
    assert rows["small_fm"] == ["224", "5.30", "cls 320", "200.0", "12.5", "cpu", "1"]
    assert rows["old_fm"] == ["224", NOT_RECORDED, "cls 384", NOT_RECORDED, NOT_RECORDED, NOT_RECORDED, "1"]


def test_pareto_front_keeps_what_nothing_cheaper_beats() -> None:
    points = [(1.0, 0.80), (2.0, 0.90), (3.0, 0.85), (0.5, 0.70), (2.0, 0.60)]
    assert pareto_front(points) == [3, 0, 1]


def test_the_recommendation_names_the_cheapest_tied_configuration(tmp_path: Path) -> None:
    (d,) = recommend(study(tmp_path, TIED), n_resamples=B).datasets
    assert d.chosen.model == "big_fm"
    assert {c.other.model: c.verdict for c in d.comparisons} == {"small_fm": Verdict.tied, "weak_fm": Verdict.worse}
    assert d.cheapest.model == "small_fm"  # weak_fm is as cheap but significantly worse: not a candidate
    assert ("Cheapest configuration statistically tied with it: small_fm (cls, 224 px) + logreg (extraction seconds "
            "per image: 5 ms/image against 50 ms/image).") in d.sentence


def test_without_measured_speed_the_cost_is_parameters_and_says_so(tmp_path: Path) -> None:
    cells = [(m, s, n, v, w, {"parameters": c["parameters"]}) for m, s, n, v, w, c in TIED]
    (d,) = recommend(study(tmp_path, cells), n_resamples=B).datasets
    assert "small_fm (cls, 224 px) + logreg (parameters: 5.3 M parameters against 86 M parameters)" in d.sentence
    (d,) = recommend(study(tmp_path / "old", [(m, s, n, v, w, {}) for m, s, n, v, w, _ in TIED]), n_resamples=B).datasets
    assert d.cheapest is None and "cost not recorded for all of them" in d.sentence


def test_the_chosen_configuration_can_be_the_cheapest(tmp_path: Path) -> None:
    cells = [("big_fm", 2.0, 1, 0.95, 768, FAST), ("small_fm", 2.0, 1, 0.90, 320, SLOW)]
    (d,) = recommend(study(tmp_path, cells), n_resamples=B).datasets
    assert d.cheapest.model == "big_fm"
    assert "It is also the cheapest of the configurations statistically tied with it (extraction seconds" in d.sentence


def test_report_has_a_cost_section_with_the_pareto_scatter(tmp_path: Path) -> None:
    paths = write_report(study(tmp_path, TIED), tmp_path / "report", n_resamples=B)
    md = paths.markdown.read_text()
    section = md[md.index("## Cost"):]
    assert "| small_fm | 224 | 5.30 | cls 320 | 200.0 | 12.5 | cpu | 1 |" in section
    assert "Pareto front" in section and (paths.out_dir / "plots" / "cost_ds.png").is_file()
    assert "Cheapest configuration statistically tied" in md
