"""`fmprobe probe --subgroups`: per-group rows of every cell from its one fit, their summaries, rescoring finished
cells from saved predictions, errors before any fit, and the table's readers with subgroup rows in it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from fmprobe.errors import FmprobeError
from fmprobe.probing import ProbeGrid, plan_probing, probe_features
from fmprobe.results import load_predictions, overall, read_results
from fmprobe.store import FeatureFile, Fingerprint, SplitLayout, write_feature_file
from fmprobe.store.journal import Batch

N_TEST = 150
SITES = ("head", "trunk", "palms")  # palms: 10 test rows, under the minimum size


def _meta(size: int) -> dict[str, tuple[str, ...]]:
    i = np.arange(size)
    age = np.where(i % 7 == 0, "", (20 + (i * 13) % 70).astype(str))  # every 7th unknown
    site = np.where(i < 10, "palms", np.where(i % 2 == 0, "head", "trunk"))
    return {"sex": tuple(np.where(i % 3 == 0, "female", "male")), "age": tuple(age), "site": tuple(site)}


def features_with_metadata(path: Path, seed: int = 0, backbone: str = "toy") -> Path:
    """A binary feature file whose test metadata has sex, age (some unknown) and site; males separate less."""
    rng = np.random.default_rng(seed)
    layouts, batches = {}, []
    for split, size in {"train": 200, "val": 80, "test": N_TEST}.items():
        labels = (np.arange(size) // 2) % 2
        meta = _meta(size)
        x = rng.normal(size=(size, 8)).astype(np.float16)
        signal = np.where(np.asarray(meta["sex"]) == "male", 0.6, 2.0)
        x[:, 0] += (signal * (2 * labels - 1)).astype(np.float16)
        layouts[split] = SplitLayout(tuple(f"{split}/{i}" for i in range(size)), labels, meta)
        batches.append(Batch(split, 0, size, {}, {"pooled": x}))
    fp = Fingerprint("toymeta", "dig", backbone, "sha256:x", {}, 32, ("pooled",), "fp32", "float16")
    attrs = {"fingerprint": fp.to_json(), "key": fp.key, "schema_version": 1, "task": "binary",
             "class_names": json.dumps(["0", "1"]), "readouts": json.dumps(["pooled"]), "primary_metric": "roc_auc"}  # fmt: skip
    write_feature_file(path, attrs, layouts, ("pooled",), {"pooled": 8}, "float16", batches, {})
    return path


KW = dict(probes=["logreg"], n_resamples=300, progress=False)  # p >= 2/301 before Holm x3
SUBGROUPS = ["sex", "age_band", "site"]


@pytest.fixture(scope="module")
def probed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, pd.DataFrame]:
    root = tmp_path_factory.mktemp("sub")
    features = features_with_metadata(root / "toy.h5")
    out = root / "results"
    probe_features([features], subgroups=SUBGROUPS, out=out, **KW)
    return features, out, read_results(out)


def test_group_rows_are_sklearn_on_the_saved_predictions(probed: tuple[Path, Path, pd.DataFrame]) -> None:
    features, _, df = probed
    whole = overall(df)
    primary = whole[whole.is_primary].iloc[0]
    pred = load_predictions(primary.predictions)
    meta = pd.DataFrame({k: list(v) for k, v in FeatureFile(features).load("test").metadata.items()},
                        index=FeatureFile(features).load("test").ids)  # fmt: skip
    sex = meta.loc[pred.ids, "sex"].to_numpy()
    for value in ("female", "male"):
        row = df[(df.subgroup == f"sex={value}") & (df.metric == "roc_auc")].iloc[0]
        rows = sex == value
        assert row.value == pytest.approx(roc_auc_score(pred.y_true[rows], pred.y_score[rows, 1]))
        assert row.n_test == rows.sum() and row.ci_low <= row.value <= row.ci_high
        assert row.is_primary and row.cell_id == primary.cell_id and row.params == primary.params
    groups = df[df.subgroup.str.startswith("sex=")]
    assert set(groups.metric) == set(whole.metric)  # every metric the cell computes, per group


def test_small_groups_unknowns_and_summaries(probed: tuple[Path, Path, pd.DataFrame]) -> None:
    _, _, df = probed
    palms = df[df.subgroup == "site=palms"]
    assert len(palms) == len(overall(df)) and palms.value.isna().all()
    assert set(palms.missing_reason) == {"group too small: n=10 < 30 (--subgroup-min-size)"}
    bands = set(df.subgroup[df.subgroup.str.startswith("age_band=")])
    assert bands == {"age_band=<40", "age_band=40–60", "age_band=60–80", "age_band=≥80"}
    summary = df[df.subgroup.isin(SUBGROUPS)].set_index(["subgroup", "metric"])
    assert set(summary.index) == {(a, m) for a in SUBGROUPS for m in ("worst[roc_auc]", "gap[roc_auc]")}
    assert not summary.is_primary.any()
    sex_gap = summary.loc[("sex", "gap[roc_auc]")]
    assert sex_gap.detail == "sex=male vs sex=female; Holm over 3 attributes"
    assert sex_gap.ci_low > 0 and sex_gap.p_value < 0.05  # males are built to separate less
    worst = summary.loc[("sex", "worst[roc_auc]")]
    male = df[(df.subgroup == "sex=male") & (df.metric == "roc_auc")].iloc[0]
    assert worst.detail == "sex=male" and worst.value == male.value and worst.ci_low == male.ci_low
    unknown_age = sum(1 for i in range(N_TEST) if i % 7 == 0)
    assert summary.loc[("age_band", "gap[roc_auc]")].detail.endswith(f"; {unknown_age} unknown excluded")
    site_gap = summary.loc[("site", "gap[roc_auc]")]
    assert site_gap.detail.startswith(("site=head vs site=trunk", "site=trunk vs site=head"))


def test_adding_subgroups_to_finished_cells_slices_their_predictions(
    probed: tuple[Path, Path, pd.DataFrame], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    features, _, fresh = probed
    out = tmp_path / "results"
    probe_features([features], out=out, **KW)
    assert (read_results(out).subgroup == "").all()
    import fmprobe.probing.run as run

    monkeypatch.setattr(run, "_run_cell", lambda *a: pytest.fail("a finished cell was refitted"))
    again = probe_features([features], subgroups=SUBGROUPS, out=out, **KW)
    assert again.cells_run == 0 and again.rows_written == (fresh.subgroup != "").sum()
    cols = ["subgroup", "metric", "value", "ci_low", "ci_high", "n_test", "p_value", "detail", "missing_reason"]
    key = ["subgroup", "metric"]
    got = read_results(out)[cols].sort_values(key).reset_index(drop=True)
    assert got.equals(fresh[cols].sort_values(key).reset_index(drop=True))
    assert probe_features([features], subgroups=SUBGROUPS, out=out, **KW).rows_written == 0


def test_unknown_attributes_fail_before_any_fit(tmp_path: Path) -> None:
    features = features_with_metadata(tmp_path / "toy.h5")
    named = r"'view': not in the test metadata of .*toy\.h5 \(stored keys: age, sex, site; derivable: age_band\)"
    with pytest.raises(FmprobeError, match=named):
        plan_probing([features], ProbeGrid(probes=("logreg",), subgroups=("sex", "view")), tmp_path / "r")
    with pytest.raises(FmprobeError, match="--bands sex=EDGES"):
        plan_probing([features], ProbeGrid(probes=("logreg",), subgroups=("sex_band",)), tmp_path / "r")
    with pytest.raises(FmprobeError, match="--subgroup-min-size 0"):
        ProbeGrid(subgroup_min_size=0)
    with pytest.raises(FmprobeError, match="--bands age=60,40"):
        ProbeGrid(bands={"age": (60, 40)})
    assert not (tmp_path / "r").exists()


def test_cli_options_reach_the_grid(tmp_path: Path) -> None:
    from fmprobe.cli import app

    features = features_with_metadata(tmp_path / "toy.h5")
    out = tmp_path / "r"
    args = ["probe", str(features), "--probe", "logreg", "--bootstrap", "50", "--subgroups", "age_band,sex",
            "--subgroup-min-size", "5", "--bands", "age=50", "--out", str(out), "-q"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    df = read_results(out)
    assert set(df.subgroup) == {"", "sex", "age_band", "sex=female", "sex=male", "age_band=<50", "age_band=≥50"}
    bad = CliRunner().invoke(app, [*args[:-3], "--bands", "age", "--out", str(out)])
    assert isinstance(bad.exception, FmprobeError) and "write KEY=EDGES" in str(bad.exception)


def test_the_recommendation_is_the_same_with_subgroup_rows_plus_the_caveat(tmp_path: Path) -> None:
    import fmprobe

    files = [features_with_metadata(tmp_path / f"{name}.h5", i, name) for i, name in enumerate(("toy", "toy2"))]
    with_rows, without = tmp_path / "with", tmp_path / "without"
    probe_features(files, subgroups=SUBGROUPS, out=with_rows, **KW)
    probe_features(files, out=without, **KW)
    assert (read_results(with_rows).subgroup != "").any()
    plain, told = fmprobe.recommend(without).sentences, fmprobe.recommend(with_rows).sentences
    assert len(told) == len(plain) and all(t.startswith(p) for t, p in zip(told, plain, strict=True))
    assert "lower for sex=male than for sex=female" in told[0]  # the caveat of a significant gap, and only that


def test_study_files_pass_subgroups_to_the_grid(tmp_path: Path) -> None:
    from fmprobe.study import load_study

    head = 'datasets = ["demo"]\nbackbones = ["efficientnet_lite0_imagenet"]\nsubgroups = ["sex", "age_band"]\n'
    path = tmp_path / "s.toml"
    path.write_text(head + "subgroup_min_size = 10\nbands = { age = [50, 70] }\n")
    study = load_study(path)
    assert study.subgroups == ("sex", "age_band") and study.subgroup_min_size == 10
    assert study.bands == {"age": (50.0, 70.0)}
    path.write_text(head + "bands = { age = [70, 50] }\n")
    with pytest.raises(FmprobeError, match=r"s\.toml: 'bands': --bands age=70,50: give increasing numbers"):
        load_study(path)


def test_per_study_scoring_gives_a_study_the_value_its_views_share(tmp_path: Path) -> None:
    """CheXpert-like: scored per study (max over views); sex is the study's, view differs between a study's views."""
    from fmprobe.tasks import STUDY

    rng = np.random.default_rng(0)
    views = [1, 2, 3] * 20  # 60 studies, 120 images
    layouts, batches = {}, []
    for split, per_study in (("train", [1] * 80), ("val", [1] * 40), ("test", views)):
        study_labels = (rng.random((len(per_study), 3)) < 0.5).astype(np.int64)
        labels = np.repeat(study_labels, per_study, axis=0)
        studies = np.repeat([f"{split}{i}" for i in range(len(per_study))], per_study)
        sex = np.repeat(np.where(np.arange(len(per_study)) % 4 == 0, "female", "male"), per_study)
        view = np.concatenate([["frontal"] + ["lateral"] * (k - 1) for k in per_study])
        x = rng.normal(size=(len(labels), 6)).astype(np.float16)
        x[:, :3] += 1.5 * labels
        meta = {STUDY: tuple(studies), "sex": tuple(sex), "view": tuple(view)}
        layouts[split] = SplitLayout(tuple(f"{split}/{i}" for i in range(len(labels))), labels, meta)
        batches.append(Batch(split, 0, len(labels), {}, {"pooled": x}))
    fp = Fingerprint("chest", "dig", "toy", "sha256:x", {}, 32, ("pooled",), "fp32", "float16")
    attrs = {"fingerprint": fp.to_json(), "key": fp.key, "schema_version": 1, "task": "multilabel",
             "class_names": json.dumps(["a", "b", "c"]), "readouts": json.dumps(["pooled"]), "primary_metric": "roc_auc",
             "evaluation": json.dumps({"aggregate": "study"})}  # fmt: skip
    path = tmp_path / "chest.h5"
    write_feature_file(path, attrs, layouts, ("pooled",), {"pooled": 6}, "float16", batches, {})
    out = tmp_path / "r"
    probe_features([path], probes=["logreg"], n_resamples=50, subgroups=["sex", "view"], subgroup_min_size=5, out=out,
                   progress=False)  # fmt: skip
    df = read_results(out)
    n = df[df.metric == "roc_auc"].set_index("subgroup").n_test.to_dict()
    assert n == {"": 60, "sex=female": 15, "sex=male": 45, "view=frontal": 20}
    summary = df[df.subgroup == "sex"].set_index("metric")
    assert summary.n_test["worst[roc_auc]"] == n[summary.detail["worst[roc_auc]"]] and summary.n_test["gap[roc_auc]"] == 60
    assert "fewer than 2 groups" in df[(df.subgroup == "view")].missing_reason.iloc[0]
    assert df[df.subgroup == "view"].missing_reason.iloc[0].endswith("40 unknown excluded")  # multi-view studies
    female = df[(df.subgroup == "sex=female") & (df.metric == "roc_auc[a]")].iloc[0]
    pred = load_predictions(female.predictions)
    rows = np.isin(pred.ids, [f"test{i}" for i in range(0, 60, 4)])
    assert female.value == pytest.approx(roc_auc_score(pred.y_true[rows, 0], pred.y_score[rows, 0]))
