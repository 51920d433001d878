"""Probing a multilabel dataset end to end: per-label AUC rows, the fixed label set named in the rows, a named label
subset, the two multilabel accuracies, and per-study scoring (max over a study's views) when the dataset asks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fmprobe.errors import FmprobeError
from fmprobe.probing import probe_features
from fmprobe.results import load_predictions, read_results
from fmprobe.store import Fingerprint, SplitLayout, write_feature_file
from fmprobe.store.journal import Batch
from fmprobe.tasks import STUDY

NAMES = ["Edema", "Fracture", "Cardiomegaly", "Other"]
VIEWS = [1, 2, 3, 2, 1, 3] * 5  # views per test study: 30 studies, 60 images


def multilabel_features(path: Path, evaluation: dict | None = None, conflict: bool = False, d: int = 12) -> Path:
    """Features whose first dimensions carry the labels; the test split is grouped into studies of 1-3 views with
    one label per study (``conflict``: one study's second view gets another label). Fracture never occurs in test."""
    rng = np.random.default_rng(0)
    layouts, batches = {}, []
    for split in ("train", "val", "test"):
        if split == "test":
            study_labels = (rng.random((len(VIEWS), 4)) < 0.4).astype(np.int64)
            study_labels[:, 1] = 0
            labels = np.repeat(study_labels, VIEWS, axis=0)
            studies = tuple(np.repeat([f"patient{i:05d}/study1" for i in range(len(VIEWS))], VIEWS).tolist())
            if conflict:
                labels[1, 0] = 1 - labels[1, 0]  # image 1 is the first of study 1's two views
        else:
            labels = (rng.random((80, 4)) < 0.4).astype(np.int64)
            studies = tuple(f"s{i}" for i in range(80))
        x = rng.normal(size=(len(labels), d)).astype(np.float16)
        x[:, :4] += 1.5 * labels
        layouts[split] = SplitLayout(tuple(f"{split}/{i}" for i in range(len(labels))), labels, {STUDY: studies})
        batches.append(Batch(split, 0, len(labels), {}, {"pooled": x}))
    fp = Fingerprint("chestset", "dig", "toy", "sha256:x", {}, 32, ("pooled",), "fp32", "float16")
    attrs = {"fingerprint": fp.to_json(), "key": fp.key, "schema_version": 1, "task": "multilabel",
             "class_names": json.dumps(NAMES), "readouts": json.dumps(["pooled"]), "primary_metric": "roc_auc",
             "evaluation": json.dumps({"label_sets": {"pair": ["Edema", "Cardiomegaly"]}, **(evaluation or {})})}  # fmt: skip
    write_feature_file(path, attrs, layouts, ("pooled",), {"pooled": d}, "float16", batches, {})
    return path


def _probe(features: Path, out: Path) -> pd.DataFrame:
    probe_features([features], probes=["logreg"], out=out, n_resamples=100, progress=False)
    return read_results(out).set_index("metric")


def test_multilabel_rows_per_label_and_per_study(tmp_path: Path) -> None:
    image = _probe(multilabel_features(tmp_path / "image.h5"), tmp_path / "image")
    study = _probe(multilabel_features(tmp_path / "study.h5", {"aggregate": "study"}), tmp_path / "study")
    for rows, n_test in ((image, 60), (study, 30)):
        assert "accuracy" not in rows.index and {"subset_accuracy", "label_accuracy"} <= set(rows.index)
        assert (rows["n_test"] == n_test).all()
        assert (
            rows.loc["roc_auc", "is_primary"]
            and "3 of 4 labels (not evaluable: Fracture: no positive)" in (rows.loc["roc_auc", "detail"])
        )
        fracture = rows.loc["roc_auc[Fracture]"]
        assert np.isnan(fracture.value) and f"no positive among its {n_test} known entries" in fracture.missing_reason
        per_label = [rows.loc[f"roc_auc[{n}]", "value"] for n in ("Edema", "Cardiomegaly", "Other")]
        assert rows.loc["roc_auc", "value"] == pytest.approx(np.mean(per_label))
        pair = rows.loc["roc_auc[pair]"]
        assert pair.value == pytest.approx(np.mean(per_label[:2])) and pair.detail.endswith("2 of 2 labels")
        for name in ("roc_auc", "roc_auc[Edema]", "roc_auc[pair]"):
            assert rows.loc[name, "ci_low"] <= rows.loc[name, "value"] <= rows.loc[name, "ci_high"], name
    assert (study["detail"].str.startswith("per study (max over 1-3 views, 60 images in 30 studies)")).all()
    assert not image["detail"].str.contains("per study").any()
    # the saved predictions hold one row per study: its label and the max of its views' scores
    per_image = load_predictions(tmp_path / "image" / image.loc["roc_auc", "predictions"])
    per_study = load_predictions(tmp_path / "study" / study.loc["roc_auc", "predictions"])
    starts = np.r_[0, np.cumsum(VIEWS)[:-1]]
    assert per_study.ids.tolist() == [f"patient{i:05d}/study1" for i in range(len(VIEWS))]
    assert np.array_equal(per_study.y_true, per_image.y_true[starts])
    assert np.allclose(per_study.y_score, np.maximum.reduceat(per_image.y_score, starts, axis=0))


def test_a_study_whose_views_disagree_is_refused(tmp_path: Path) -> None:
    features = multilabel_features(tmp_path / "bad.h5", {"aggregate": "study"}, conflict=True)
    with pytest.raises(FmprobeError, match=r"study 'patient00001/study1' has views with different labels"):
        probe_features([features], probes=["logreg"], out=tmp_path / "r", n_resamples=0, progress=False)


def test_report_has_a_per_label_table_and_names_the_label_set(tmp_path: Path) -> None:
    from fmprobe.report import write_report

    out = tmp_path / "results"
    _probe(multilabel_features(tmp_path / "study.h5", {"aggregate": "study"}), out)
    text = write_report(out, tmp_path / "report").markdown.read_text()
    assert "(n = 30; per study (max over 1-3 views, 60 images in 30 studies); 3 of 4 labels (not evaluable: " \
           "Fracture: no positive))" in text  # fmt: skip
    table = text[text.index("### Per label") :]
    assert "| Edema | Fracture | Cardiomegaly | Other | pair (mean) |" in table.replace("  ", " ")
    assert "n/a (no positive among its 30 known entries)" in table
    assert "Label sets: pair: per study (max over 1-3 views, 60 images in 30 studies); 2 of 2 labels." in table
