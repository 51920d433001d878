"""The data-efficiency panel: a band that includes the spread over repeats, and a few-shot axis of its own."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from fmprobe.report import format_table, write_report
from fmprobe.report.analysis import dataset_views, efficiency_curves, repeat_band
from fmprobe.results import cell_id, read_results, to_frame, validate


def _rows(values: dict[float, list[float]], half_width: float = 0.05, shots: int = 0) -> pd.DataFrame:
    """Primary rows of one model and probe, a repeat per value, every repeat with the same CI width."""
    rows = []
    for fraction, per_repeat in values.items():
        for repeat, value in enumerate(per_repeat):
            key = dict(dataset="d", backbone="m", weights="pretrained", readout="cls", resolution=224, probe="proto",
                       train_fraction=fraction, repeat=repeat, seed=0, fingerprint="fp", shots=shots)  # fmt: skip
            rows.append({**key, "task": "binary", "params": "{}", "metric": "roc_auc", "value": value,
                         "ci_low": value - half_width, "ci_high": value + half_width, "missing_reason": "",
                         "is_primary": True, "n_train": int(100 * fraction), "n_test": 50, "val_score": 0.8,
                         "cell_id": cell_id(**key), "predictions": ""})  # fmt: skip
    return validate(to_frame(pd.DataFrame(rows)))


def _band(df: pd.DataFrame, fraction: float) -> float:
    (curve,) = efficiency_curves(dataset_views(df)[0]).values()
    point = next(p for p in curve if p.x == fraction)
    return point.ci_high - point.ci_low


def test_the_band_widens_when_repeats_disagree_with_the_same_per_repeat_cis() -> None:
    agree = _rows({0.1: [0.70, 0.70, 0.70], 1.0: [0.9]})
    disagree = _rows({0.1: [0.55, 0.70, 0.85], 1.0: [0.9]})
    # the old band (mean of the repeats' CI bounds) was 0.1 wide for both
    assert _band(agree, 0.1) == pytest.approx(0.1, rel=1e-9)  # no spread: the test set's bootstrap alone
    assert _band(disagree, 0.1) > 3 * _band(agree, 0.1)
    z = 1.959963984540054
    expected = 2 * z * np.sqrt(np.var([0.55, 0.70, 0.85], ddof=1) + (0.1 / (2 * z)) ** 2)
    assert _band(disagree, 0.1) == pytest.approx(expected)
    low, high = repeat_band(np.array([0.6, np.nan]), np.array([0.55, np.nan]), np.array([0.65, np.nan]))
    assert (low, high) == pytest.approx((0.55, 0.65))  # a missing repeat is left out, not a zero


def test_shot_rows_have_their_own_axis_and_never_enter_a_fraction_view() -> None:
    fractions = _rows({0.1: [0.6, 0.62], 1.0: [0.9]})
    plain = dataset_views(fractions)[0]
    assert plain.shots == () and efficiency_curves(plain, "shots") == {}
    shots = pd.concat([fractions, _rows({0.02: [0.5, 0.55]}, shots=1), _rows({1.0: [0.1, 0.2]}, shots=50)])
    view = dataset_views(shots)[0]
    assert view.shots == (1, 50) and view.fractions == (0.1, 1.0)  # a shot row's used fraction is no fraction
    assert view.at(1.0)["value"].tolist() == [0.9]  # the 50-shot rows with train_fraction 1.0 stay out
    (curve,) = efficiency_curves(view, "shots").values()
    assert [(p.x, p.mean, p.repeats) for p in curve] == [(1, pytest.approx(0.525), 2), (50, pytest.approx(0.15), 2)]
    (fraction_curve,) = efficiency_curves(view).values()
    assert [p.x for p in fraction_curve] == [0.1, 1.0] and fraction_curve[-1].mean == 0.9


def test_report_draws_the_few_shot_panel_only_for_datasets_with_shot_rows(study: Path, tmp_path: Path) -> None:
    df = read_results(study)
    base = df[(df["dataset"] == "synth_lesions") & np.isclose(df["train_fraction"], 0.1)].copy()
    shot_rows = []
    for k in (1, 2, 4):
        rows = base.assign(shots=k, train_fraction=1.0 if k == 4 else 2 * k / 1000, n_train=2 * k)
        rows["cell_id"] = [f"{c[:12]}s{k:03d}" for c in rows["cell_id"]]
        shot_rows.append(rows)
    with_shots = pd.concat([df, *shot_rows], ignore_index=True)
    report = write_report(with_shots, tmp_path / "report", n_resamples=50)
    md = report.markdown.read_text()
    assert md.count("The few-shot panel (log2 axis)") == 1 and "1.96·sqrt(between-repeat variance" in md
    assert "0.1, 1; shots 1, 2, 4" in md
    lesions, tissue = (
        imread(report.out_dir / "plots" / f"efficiency_{d}.png") for d in ("synth_lesions", "synth_tissue")
    )
    assert lesions.shape[1] > 1.4 * tissue.shape[1]  # two panels side by side vs one
    assert format_table(with_shots, "synth_lesions") == format_table(df, "synth_lesions")  # tables: fraction rows only
