"""What the report computes: validation-only selection and paired gains with their combined CI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _report_study import DATASETS

from fmprobe.errors import ResultsError
from fmprobe.metrics import paired_bootstrap
from fmprobe.report.analysis import dataset_views, headline, pick_baseline, relative_gain_samples
from fmprobe.results import load_predictions, read_results


def test_gain_sign_and_mean_ci(study: Path) -> None:
    views = dataset_views(read_results(study))
    h = headline(views, "toy_imagenet", n_bootstrap=300, seed=0)
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
    h2 = headline(views, "toy_fm", n_bootstrap=300, seed=0)
    assert all(g.rel < 0 for g in h2.gains if g.model == "toy_imagenet")




def test_selection_uses_validation_never_test(study: Path) -> None:
    df = read_results(study)
    fm = (df["dataset"] == "synth_tissue") & (df["backbone"] == "toy_fm") & (df["weights"] == "pretrained")
    test_best = df[fm & df["is_primary"] & (df["train_fraction"] == 1.0)].groupby("probe")["value"].mean().idxmax()
    val_pick = "knn" if test_best == "logreg" else "logreg"
    df.loc[fm & (df["probe"] == val_pick), "val_score"] = 0.999  # validation now prefers the test-worse probe
    h = headline(dataset_views(df), "toy_imagenet", n_bootstrap=50, seed=0)
    g = next(g for g in h.gains if g.dataset == "synth_tissue" and g.model == "toy_fm")
    assert g.choice.probe == val_pick and g.choice.val_score == pytest.approx(0.999)




def test_default_baseline_comes_from_the_registry_never_from_the_name() -> None:
    models = ["deit_base_imagenet", "hf:org/imagenet-vit", "my_imagenet_copy", "openclip:ViT-B-16:laion2b", "resnet50_imagenet:random"]
    base, note = pick_baseline(models, None, registered={"deit_base_imagenet", "resnet152_imagenet"})
    assert base == "deit_base_imagenet" and "registry marks it" in note and "--baseline" in note
    base, note = pick_baseline(models, None, registered={"resnet50_imagenet", "deit_base_imagenet"} & set(models))
    assert base == "deit_base_imagenet"
    base, note = pick_baseline(sorted(models)[1:], None, registered=())  # no registered baseline: say so, pick first
    assert base == "hf:org/imagenet-vit" and "no model in these results is registered" in note
    for name in ("openclip:ViT-B-16:laion2b", "resnet50_imagenet:random", "hf:org/imagenet-vit"):
        assert pick_baseline(models, name, registered={"deit_base_imagenet"})[0] == name  # colons are not excluded
    with pytest.raises(ResultsError, match="Closest: deit_base_imagenet"):
        pick_baseline(models, "deit_base_imagenett")


def test_predictions_are_read_once_per_report_and_again_when_rewritten(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os

    from fmprobe.report.analysis import cell_predictions, feature_file_of
    from fmprobe.results import save_predictions

    y = np.array([0, 1, 1, 0])
    scores = np.tile([0.4, 0.6], (4, 1))
    rel = save_predictions(tmp_path, "cell", ["a", "b", "c", "d"], y, scores, {"feature_file": "/x/f.h5"})
    path = tmp_path / rel
    assert cell_predictions(path) is cell_predictions(path) and feature_file_of(path) == "/x/f.h5"
    stat = path.stat()
    save_predictions(tmp_path, "cell", ["a", "b", "c", "d"], y, scores, {"feature_file": "/y/g.h5"})  # a rerun
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # a later write, even on a coarse clock
    assert feature_file_of(path) == "/y/g.h5" and feature_file_of("") == "" and feature_file_of(tmp_path / "no") == ""
