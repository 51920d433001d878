"""Report rendering from a synthetic study written through the results API.

The study: 2 datasets (binary, multiclass) x 3 models (a weak ImageNet baseline, a strong foundation
model, and that model's ':random' control) x 2 probes x 2 train fractions x 2 repeats. Scores are
simulated so that the ranking is known: toy_fm > toy_imagenet > toy_fm:random.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fmprobe.errors import ResultsError
from fmprobe.metrics import PRIMARY_METRIC, compute_all, paired_bootstrap
from fmprobe.report import format_table, write_report
from fmprobe.report.analysis import dataset_views, headline, relative_gain_samples
from fmprobe.results import ResultRow, append_rows, cell_id, load_predictions, read_results, save_predictions

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
                                    **key,
                                )
                            )
    append_rows(results_dir, rows)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("study")
    build_study(d)
    return d


@pytest.fixture(scope="module")
def report(study: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return write_report(study, tmp_path_factory.mktemp("report"), n_resamples=300)


def test_report_files_exist(report) -> None:  # type: ignore[no-untyped-def]
    assert report.markdown.is_file() and report.html.is_file()
    names = sorted(p.name for p in report.plots)
    assert names == [
        "confusion_synth_lesions.png",
        "confusion_synth_tissue.png",
        "efficiency_synth_lesions.png",
        "efficiency_synth_tissue.png",
        "gain.png",
    ]
    for p in report.plots:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
    md = report.markdown.read_text()
    for p in report.plots:
        assert f"](plots/{p.name})" in md
    assert "chosen on validation" in md and "fp-toy_fm-random-synth_tissue" in md
    assert "Baseline: `toy_imagenet` (chosen automatically" in md  # no baseline given: the ImageNet model, said so


def test_html_is_self_contained(report) -> None:  # type: ignore[no-untyped-def]
    html = report.html.read_text()
    srcs = re.findall(r'src="([^"]*)"', html)
    assert len(srcs) == 5 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<link" not in html and "<script" not in html and "http://" not in html and "https://" not in html
    assert "<strong>" in html and "<style>" in html


def test_table_marks_best_per_column(study: Path, report) -> None:  # type: ignore[no-untyped-def]
    df = read_results(study)
    md = report.markdown.read_text()
    full = df[df["is_primary"] & (df["train_fraction"] == 1.0) & (df["repeat"] == 0)]
    for _, g in full.groupby(["dataset", "probe"]):
        best = g.loc[g["value"].idxmax()]
        assert best["backbone"] == "toy_fm" and best["weights"] == "pretrained"
        assert f"**{best['value']:.3f}** [{best['ci_low']:.3f}, {best['ci_high']:.3f}]" in md
    text = format_table(df, "synth_tissue")
    assert "mean ± sd over 2 repeats" in text
    header, rule = text.splitlines()[1:3]
    assert header.split() == ["backbone", "knn", "logreg"] and set(rule.replace(" ", "")) == {"-"}
    fm_row = next(line for line in text.splitlines() if line.startswith("toy_fm "))
    assert fm_row.count("*") == 2  # best in both probe columns
    assert next(line for line in text.splitlines() if line.startswith("toy_fm:random"))  # weights tag shown
    with pytest.raises(ResultsError, match="Closest: synth_tissue"):
        format_table(df, "synth_tisue")


def test_gain_sign_and_mean_ci(study: Path) -> None:
    views = dataset_views(read_results(study))
    h = headline(views, "toy_imagenet", n_resamples=300, seed=0)
    assert h.models == ["toy_fm", "toy_fm:random"]
    by = {(g.dataset, g.model): g for g in h.gains}
    for ds in DATASETS:
        strong, rand = by[ds, "toy_fm"], by[ds, "toy_fm:random"]
        assert strong.reason == "" and strong.rel > 0.05 and strong.rel_low > 0 and strong.p_value < 0.05
        assert rand.rel < 0 and rand.rel_high < 0
        # the replicates combined across datasets are exactly paired_bootstrap's
        a = load_predictions(strong.choice.first["predictions"])
        b = load_predictions(strong.base_choice.first["predictions"])
        cmp = paired_bootstrap(
            views[0].metric if ds == "synth_lesions" else views[1].metric,
            a.y_true,
            a.y_score,
            b.y_score,
            n_resamples=300,
            seed=0,
        )
        s = relative_gain_samples(strong.metric, a.y_true, a.y_score, b.y_score, 300, 0)
        assert np.quantile(s, [0.025, 0.975]) == pytest.approx([cmp.rel_low, cmp.rel_high])
    mean = {m.model: m for m in h.means}
    fm = mean["toy_fm"]
    assert fm.rel == pytest.approx(np.mean([by[d, "toy_fm"].rel for d in DATASETS]))
    assert 0 < fm.low < fm.rel < fm.high
    assert mean["toy_fm:random"].high < 0
    # flipping the baseline flips the sign
    h2 = headline(views, "toy_fm", n_resamples=300, seed=0)
    assert all(g.rel < 0 for g in h2.gains if g.model == "toy_imagenet")


def test_selection_uses_validation_never_test(study: Path) -> None:
    df = read_results(study)
    fm = (df["dataset"] == "synth_tissue") & (df["backbone"] == "toy_fm") & (df["weights"] == "pretrained")
    test_best = df[fm & df["is_primary"] & (df["train_fraction"] == 1.0)].groupby("probe")["value"].mean().idxmax()
    val_pick = "knn" if test_best == "logreg" else "logreg"
    df.loc[fm & (df["probe"] == val_pick), "val_score"] = 0.999  # validation now prefers the test-worse probe
    h = headline(dataset_views(df), "toy_imagenet", n_resamples=50, seed=0)
    g = next(g for g in h.gains if g.dataset == "synth_tissue" and g.model == "toy_fm")
    assert g.choice.probe == val_pick and g.choice.val_score == pytest.approx(0.999)


def test_gain_rendered_in_report(report) -> None:  # type: ignore[no-untyped-def]
    md = report.markdown.read_text()
    line = next(row for row in md.splitlines() if row.startswith("| toy_fm |"))
    gains = re.findall(r"([+-]\d+\.\d)% \[([+-]\d+\.\d)%, ([+-]\d+\.\d)%\]", line)
    assert len(gains) == 3 and all(float(lo) > 0 for _, lo, _ in gains)  # 2 datasets + mean, all above 0


def test_missing_metric_shows_reason_not_number(report) -> None:  # type: ignore[no-untyped-def]
    md = report.markdown.read_text()
    lesions = md.split("## Dataset `synth_lesions`")[1].split("## Dataset")[0]
    row = next(line for line in lesions.splitlines() if line.startswith("| toy_fm:random |"))
    knn_cell = row.split("|")[2].strip()  # columns: backbone | knn | logreg
    assert knn_cell == "—<sup>1</sup>"
    assert f"<sup>1</sup> roc_auc missing: {NAN_REASON}" in lesions
    mean_row = [line for line in lesions.splitlines() if line.startswith("| toy_fm:random |")][1]
    assert mean_row.split("|")[2].strip() == "—<sup>1</sup>"  # repeat 1 is defined, but no partial mean is shown
    assert f"<sup>1</sup> roc_auc missing in 1 of 2 repeats: {NAN_REASON}" in lesions
    assert NAN_REASON in report.html.read_text()


def test_explicit_and_unknown_baseline(study: Path, tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match="Closest: toy_imagenet"):
        write_report(study, tmp_path / "r", baseline="toy_imagenett", n_resamples=50)
    df = read_results(study)
    one = df[df["dataset"] == "synth_tissue"]
    paths = write_report(one, tmp_path / "r2", baseline="toy_fm:random", n_resamples=50)
    md = paths.markdown.read_text()
    assert "Baseline: `toy_fm:random` (given)" in md and "efficiency_synth_tissue.png" in md
    assert not pd.isna(one["value"]).any()


def test_minimal_table_without_predictions_still_renders(study: Path, tmp_path: Path) -> None:
    df = read_results(study)
    df = df[
        (df["dataset"] == "synth_lesions")
        & (df["train_fraction"] == 1.0)
        & (df["repeat"] == 0)
        & ~((df["backbone"] == "toy_fm") & (df["weights"] == "random"))
    ].copy()
    df["predictions"] = ""  # e.g. a table from an older run: no paired test is possible, and the report says so
    paths = write_report(df, tmp_path, n_resamples=50)
    md = paths.markdown.read_text()
    assert [p.name for p in paths.plots] == []  # one fraction, no predictions: nothing to plot
    assert "mean ± sd" not in md and "Data efficiency" not in md
    assert "| toy_fm | —<sup>1</sup> | —<sup>2</sup> |" in md
    assert "<sup>1</sup> toy_fm on synth_lesions: this cell has no predictions file" in md
    assert "no confusion matrix — this cell has no predictions file" in md
