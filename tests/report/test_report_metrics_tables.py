"""Report sections of every metric with the chosen hyper-parameters, per class, calibration, and the binary
confusion matrix at the threshold chosen on validation."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from test_probing import synthetic_features

from fmprobe.metrics import ece
from fmprobe.metrics.perclass import per_class
from fmprobe.probing import probe_features
from fmprobe.probing.scoring import validation_threshold
from fmprobe.report import write_report
from fmprobe.report.analysis import choose_on_val, with_models
from fmprobe.report.tables_metrics import describe_params
from fmprobe.results import load_predictions, read_results


def _section(md: str, dataset: str, heading: str) -> str:
    """The text of ``### heading`` inside dataset ``dataset``'s section."""
    part = md.split(f"## Dataset `{dataset}`", 1)[1].split("\n## ", 1)[0]
    return part.split(f"### {heading}\n", 1)[1].split("\n### ", 1)[0]


def _ci(r) -> str:  # type: ignore[no-untyped-def]
    return f"{r.value:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]"


def test_chosen_hyper_parameters_read_short() -> None:
    assert describe_params(json.dumps({"C": 0.1})) == "C=0.1"
    assert describe_params(json.dumps({"k": 20, "voting": "weighted"})) == "k=20 (weighted)"
    assert describe_params(json.dumps({"temperature": 0.05})) == "T=0.05"
    assert describe_params(json.dumps({"n_estimators": [40, 120, 80], "early_stopping": "x"})) == "rounds=40–120"
    assert (
        describe_params(json.dumps({"C": 1.0, "decoding": "expected", "cuts": [0.5, 1.5]})) == "C=1, expected decoding"
    )
    assert describe_params(json.dumps({"C": 10.0, "youden_threshold": 0.3124})) == "C=10, threshold=0.312"
    assert describe_params(json.dumps({"chosen_epoch": 7, "epochs_run": 10, "lr": 1e-4})) == "epoch 7 of 10, lr=0.0001"
    assert describe_params("") == describe_params("not json") == ""


def test_all_metrics_table_shows_every_metric_and_the_chosen_hyper_parameters(study: Path, report) -> None:  # type: ignore[no-untyped-def]
    md = report.markdown.read_text()
    df = with_models(read_results(study))
    for dataset in ("synth_lesions", "synth_tissue"):
        text = _section(md, dataset, "All metrics")
        rows = df[(df.dataset == dataset) & (df.train_fraction == 1.0)]
        primary = rows[rows.is_primary]
        metrics = set(rows.metric)
        header = next(line for line in text.splitlines() if line.startswith("| backbone"))
        assert set(header.strip("| ").split(" | ")[4:]) == metrics  # every recorded metric, ece included
        assert "ece" in metrics
        for probe in ("knn", "logreg"):
            for model, c in choose_on_val(primary[primary.probe == probe], primary.metric.iloc[0]).items():
                cell = rows[rows.cell_id == c.first["cell_id"]].set_index("metric")
                line = next(x for x in text.splitlines() if re.match(rf"\| {re.escape(model)}†? \| {probe} \|", x))
                assert ("C=1" if probe == "logreg" else "k=20") in line
                for m, r in cell.iterrows():
                    assert (_ci(r) if r.value == r.value else "—") in line, (model, probe, m)


def test_per_class_tables_match_the_predictions_of_each_chosen_configuration(study: Path, report) -> None:  # type: ignore[no-untyped-def]
    text = _section(report.markdown.read_text(), "synth_tissue", "Per class")
    df = with_models(read_results(study))
    primary = df[(df.dataset == "synth_tissue") & df.is_primary & (df.train_fraction == 1.0)]
    chosen = choose_on_val(primary, "balanced_accuracy")
    assert set(re.findall(r"^\*`([^`]+)`", text, flags=re.M)) == set(chosen)  # one table per backbone
    for model, c in chosen.items():
        pred = load_predictions(c.first["predictions"])
        table = text.split(f"*`{model}`", 1)[1].split("\n\n*", 1)[0]
        for row in per_class(pred.y_true, pred.y_score, pred.class_names):
            line = next(x for x in table.splitlines() if x.startswith(f"| {row.name} |"))
            assert f"| {row.support} |" in line and f"| {row.values['recall'].value:.3f} [" in line
            assert f"| {row.values['roc_auc'].value:.3f} [" in line


def test_calibration_section_reads_recorded_ece_or_computes_it_for_older_tables(
    study: Path, report, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    md = report.markdown.read_text()
    text = _section(md, "synth_lesions", "Calibration")
    df = with_models(read_results(study))
    assert "source: results table" in text and "![reliability diagram synth_lesions]" in text
    assert any(p.name == "reliability_synth_lesions.png" for p in report.plots)
    primary = df[(df.dataset == "synth_lesions") & df.is_primary & (df.train_fraction == 1.0)]
    for model, c in choose_on_val(primary, "roc_auc").items():
        r = df[(df.cell_id == c.first["cell_id"]) & (df.metric == "ece")].iloc[0]
        assert f"| {model} | {c.describe()} | {_ci(r)} |" in text
    older = read_results(study)
    older = older[(older.metric != "ece") & (older.dataset == "synth_lesions")]  # a table from before ece existed
    paths = write_report(older, tmp_path, n_resamples=50)
    text = _section(paths.markdown.read_text(), "synth_lesions", "Calibration")
    assert "computed from the predictions file (not recorded in the results table)" in text
    for model, c in choose_on_val(
        with_models(older[older.is_primary & (older.train_fraction == 1.0)]), "roc_auc"
    ).items():
        pred = load_predictions(c.first["predictions"])
        assert f"| {model} | {c.describe()} | {ece(pred.y_true, pred.y_score):.3f} [" in text
    assert "ece" not in _section(paths.markdown.read_text(), "synth_lesions", "All metrics").split("\n| ", 2)[1]


def test_older_binary_predictions_say_the_threshold_was_not_recorded(report) -> None:  # type: ignore[no-untyped-def]
    text = _section(report.markdown.read_text(), "synth_lesions", "Confusion matrix")
    assert "Predicted class: the argmax of the scores (the validation threshold was not recorded" in text
    assert "Recall per class at this rule (sensitivity and specificity; test): benign " in text


class _Probe:
    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return np.stack([1 - X[:, 0], X[:, 0]], axis=1)


def test_validation_threshold_is_youden_on_the_rows_given() -> None:
    X = np.array([[0.1], [0.4], [0.35], [0.8]])
    y = np.array([0, 0, 1, 1])
    # J = 1/2 at 0.8 (TPR 1/2, FPR 0) and at 0.35 (TPR 1, FPR 1/2): the higher threshold wins the tie
    assert validation_threshold(_Probe(), X, y) == {"youden_val": 0.8, "n_val": 4}
    X[1, 0] = 0.3  # now 0.35 separates the classes: J = 1
    assert validation_threshold(_Probe(), X, y)["youden_val"] == 0.35
    assert validation_threshold(_Probe(), X, np.zeros(4, int))["youden_val"] is None
    assert validation_threshold(_Probe(), X[:0], y[:0]) == {"youden_val": None, "reason": "no validation rows"}


def test_binary_probe_records_the_validation_threshold_and_the_report_uses_it(tmp_path: Path) -> None:
    features = synthetic_features(tmp_path / "toy.h5")
    probe_features([features], probes=["logreg"], out=tmp_path / "r", n_resamples=50, progress=False)
    row = read_results(tmp_path / "r").query("is_primary").iloc[0]
    pred = load_predictions(row.predictions)
    t = pred.meta["threshold"]["youden_val"]
    assert 0 < t < 1 and pred.meta["threshold"]["n_val"] == 60 and json.loads(row.params)["youden_threshold"] == t
    paths = write_report(tmp_path / "r", tmp_path / "report", n_resamples=50)
    text = _section(paths.markdown.read_text(), "toyset", "Confusion matrix")
    positive = pred.y_score[:, 1] >= t
    recall_1, recall_0 = positive[pred.y_true == 1].mean(), (~positive[pred.y_true == 0]).mean()
    assert f"Predicted 1 when its score ≥ {t:.3f}, the threshold chosen on validation by Youden's J" in text
    assert f"at this rule (sensitivity and specificity; test): 0 {recall_0:.3f}, 1 {recall_1:.3f}." in text
    argmax = pred.y_score.argmax(axis=1) == 1
    assert f"At the argmax (score ≥ 0.5): 0 {(~argmax[pred.y_true == 0]).mean():.3f}, 1 " in text


def test_multiclass_probe_records_no_threshold(tmp_path: Path) -> None:
    features = synthetic_features(tmp_path / "toy.h5", task="multiclass")
    probe_features([features], probes=["logreg"], out=tmp_path / "r", n_resamples=0, progress=False)
    row = read_results(tmp_path / "r").query("is_primary").iloc[0]
    assert "threshold" not in load_predictions(row.predictions).meta and "youden_threshold" not in row.params


def test_multilabel_report_has_ece_and_calibration_but_no_per_class_table(tmp_path: Path) -> None:
    from test_probing_multilabel import multilabel_features

    probe_features([multilabel_features(tmp_path / "x.h5")], probes=["logreg"], out=tmp_path / "r", n_resamples=50,
                   progress=False)  # fmt: skip
    df = read_results(tmp_path / "r").set_index("metric")
    pred = load_predictions(df.loc["roc_auc", "predictions"])
    assert df.loc["ece", "value"] == pytest.approx(ece(pred.y_true, pred.y_score))
    md = write_report(tmp_path / "r", tmp_path / "report", n_resamples=50).markdown.read_text()
    header = next(x for x in _section(md, "chestset", "All metrics").splitlines() if x.startswith("| backbone"))
    assert "| ece |" in header + " |" and "roc_auc[" not in header  # per-label rows stay in the per-label table
    assert "### Per class" not in md and "### Per label" in md
    assert f"| {df.loc['ece', 'value']:.3f} [" in _section(md, "chestset", "Calibration")
