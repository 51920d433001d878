"""Per-study scoring: the max over a study's views, the study's one label, and one rule for probing and fine-tuning."""

from __future__ import annotations

import numpy as np
import pytest

from fmprobe.metrics import MetricInputError
from fmprobe.metrics.aggregate import evaluation_rows, max_over_views
from fmprobe.tasks import STUDY

IDS = np.array(["p1/s1/v1.jpg", "p1/s1/v2.jpg", "p2/s1/v1.jpg", "p1/s2/v1.jpg"])
STUDIES = np.array(["p1/s1", "p1/s1", "p2/s1", "p1/s2"])
LABELS = np.array([[1, 0], [1, 0], [0, 1], [0, 0]])
SCORES = np.array([[0.2, 0.9], [0.7, 0.1], [0.4, 0.5], [0.3, 0.3]])


def test_a_study_scores_the_max_over_its_views_in_order_of_first_appearance() -> None:
    rows = max_over_views(STUDIES, LABELS, SCORES)
    assert rows.ids.tolist() == ["p1/s1", "p2/s1", "p1/s2"]
    np.testing.assert_array_equal(rows.y_score, [[0.7, 0.9], [0.4, 0.5], [0.3, 0.3]])
    np.testing.assert_array_equal(rows.y_true, [[1, 0], [0, 1], [0, 0]])
    assert rows.detail == "per study (max over 1-2 views, 4 images in 3 studies)"
    with pytest.raises(MetricInputError, match="study 'p1/s1' has views with different labels"):
        max_over_views(STUDIES, np.array([[1, 0], [0, 0], [0, 1], [0, 0]]), SCORES)


def test_the_dataset_says_how_it_is_scored() -> None:
    image = evaluation_rows(IDS, LABELS, SCORES, {STUDY: STUDIES}, {}, "x")
    assert image.ids.tolist() == IDS.tolist() and image.detail == ""
    study = evaluation_rows(IDS, LABELS, SCORES, {STUDY: STUDIES}, {"aggregate": "study"}, "x")
    assert len(study.ids) == 3 and study.detail.startswith("per study")
    with pytest.raises(MetricInputError, match="feats.h5: .*no study metadata.*--force"):
        evaluation_rows(IDS, LABELS, SCORES, {}, {"aggregate": "study"}, "feats.h5")
    with pytest.raises(MetricInputError, match="only 'image' and 'study' exist"):
        evaluation_rows(IDS, LABELS, SCORES, {STUDY: STUDIES}, {"aggregate": "patient"}, "x")


def test_fine_tuning_scores_a_per_study_dataset_per_study() -> None:
    from fmprobe.datasets import Dataset, Split
    from fmprobe.datasets.base import ArraySource
    from fmprobe.finetune.api import _test_rows

    images = np.zeros((4, 8, 8, 3), dtype=np.uint8)
    split = Split("test", tuple(IDS), LABELS, ArraySource(images, "t"), {STUDY: tuple(STUDIES)})
    data = Dataset("cx", "chexpert:x?aggregate=study", "multilabel", ("a", "b"), {"test": split}, "d",
                   evaluation={"aggregate": "study"})  # fmt: skip
    rows = _test_rows(data, SCORES)
    assert rows.ids.tolist() == ["p1/s1", "p2/s1", "p1/s2"] and rows.detail.startswith("per study")
