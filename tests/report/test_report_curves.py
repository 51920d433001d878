"""ROC / precision-recall curves of the recommended configuration and the baseline (fmprobe/report/curves.py)."""

from __future__ import annotations

import re

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from fmprobe.report.curves import MAX_LABELS, panels
from fmprobe.results import Predictions


def _pred(y: np.ndarray, s: np.ndarray, names: list[str]) -> Predictions:
    return Predictions(np.array([str(i) for i in range(len(y))]), y, s, {"class_names": names})


def test_binary_curves_carry_the_auc_and_average_precision_of_the_positive_class() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p1 = np.clip(0.3 * y + rng.uniform(size=200) * 0.7, 0, 1)
    (panel,) = panels("binary", {"rec": _pred(y, np.c_[1 - p1, p1], ["benign", "malignant"]),
                                 "base": _pred(y, np.c_[p1[::-1], 1 - p1[::-1]], ["benign", "malignant"])})  # fmt: skip
    assert panel.title == "malignant vs benign" and list(panel.roc) == ["rec", "base"]
    assert np.isclose(panel.roc["rec"].area, roc_auc_score(y, p1))
    assert np.isclose(panel.pr["rec"].area, average_precision_score(y, p1))
    assert panel.roc["rec"].x[0] == 0 and panel.roc["rec"].y[-1] == 1  # a whole ROC curve


def test_multilabel_curves_show_the_most_frequent_labels_over_their_known_entries() -> None:
    rng = np.random.default_rng(1)
    n, k = 300, MAX_LABELS + 2
    rate = np.linspace(0.05, 0.6, k)  # label j's positive rate: the last labels are the most frequent
    y = (rng.uniform(size=(n, k)) < rate).astype(int)
    y[:40, k - 1] = -1  # unknown entries: left out, as the metrics do
    s = np.clip(0.4 * y + rng.uniform(size=(n, k)) * 0.6, 0, 1)
    names = [f"L{j}" for j in range(k)]
    got = panels("multilabel", {"rec": _pred(y, s, names)})
    assert [p.title for p in got] == [f"L{j}" for j in range(k - 1, k - 1 - MAX_LABELS, -1)]
    known = y[:, k - 1] != -1
    assert np.isclose(got[0].roc["rec"].area, roc_auc_score(y[known, k - 1], s[known, k - 1]))


def test_multiclass_curves_are_one_vs_rest_macro_averages() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 240)
    s = rng.dirichlet(np.ones(3), 240) + 0.8 * np.eye(3)[y]
    s /= s.sum(axis=1, keepdims=True)
    (panel,) = panels("multiclass", {"rec": _pred(y, s, ["a", "b", "c"])})
    assert "macro over 3 classes" in panel.title
    assert np.isclose(panel.roc["rec"].area, np.mean([roc_auc_score(y == c, s[:, c]) for c in range(3)]))
    assert np.isclose(panel.roc["rec"].area, roc_auc_score(y, s, multi_class="ovr", average="macro"))


def test_the_report_shows_the_curves_of_the_recommendation_and_the_baseline(report) -> None:  # type: ignore[no-untyped-def]
    md = report.markdown.read_text()
    sections = re.findall(r"### ROC and precision-recall curves\n\n(.*?)\n\n!\[([^\]]+)\]", md, re.S)
    assert [alt for _, alt in sections] == ["ROC and PR curves synth_lesions", "ROC and PR curves synth_tissue"]
    assert "the positive class" in sections[0][0] and "one-vs-rest, macro" in sections[1][0]
    assert {p.name for p in report.plots} >= {"curves_synth_lesions.png", "curves_synth_lesions.svg"}
