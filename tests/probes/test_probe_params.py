"""Any probe parameter from the CLI (``--probe-param lgbm.n_jobs=1``) and studies (``[probe_params.lgbm]``): parsed
once in the library, checked against the probe's constraints before any work, with errors naming the probe and
the parameter."""

from __future__ import annotations

from pathlib import Path

import pytest

from fmprobe.errors import FmprobeError, ProbeError
from fmprobe.probes import ProbeParameterError
from fmprobe.probing import ProbeGrid
from fmprobe.probing.grid import parse_probe_params, parse_value


def test_values_are_parsed_as_int_float_bool_none_tuple_or_string() -> None:
    assert [parse_value(v) for v in ("1", "-1", "0.5", "1e-3", "true", "False", "none", "auto")] == [
        1, -1, 0.5, 1e-3, True, False, None, "auto",
    ]  # fmt: skip
    assert parse_value("0.01,0.1,1") == (0.01, 0.1, 1)


def test_strings_and_mappings_give_the_same_grid() -> None:
    items = ["lgbm.n_jobs=1", "lgbm.pca_components=64,256", "logreg.Cs=0.1,1"]
    grid = ProbeGrid(probe_params=items)
    assert grid.probe_params == {"lgbm": {"n_jobs": 1, "pca_components": (64, 256)}, "logreg": {"Cs": (0.1, 1)}}
    assert ProbeGrid(probe_params=grid.probe_params).probe_params == grid.probe_params
    assert parse_probe_params({"knn": {"k": 5}}) == {"knn": {"k": 5}}


@pytest.mark.parametrize(
    ("item", "error", "match"),
    [
        ("lgbm.n_jobs=many", ProbeParameterError, r"The 'n_jobs' parameter of LGBMProbe must be"),
        ("lgbm.n_job=1", ProbeError, r"probe 'lgbm' has no parameter\(s\) n_job; valid: .*n_jobs"),
        ("lgbmm.n_jobs=1", FmprobeError, r"lgbm"),
        ("n_jobs=1", FmprobeError, r"--probe-param 'n_jobs=1': write PROBE.PARAMETER=VALUE"),
        ("lgbm.n_jobs", FmprobeError, r"write PROBE.PARAMETER=VALUE"),
    ],
)
def test_bad_items_fail_when_the_grid_is_built(item: str, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        ProbeGrid(probe_params=[item])


def test_cli_refuses_a_bad_probe_param_before_any_work(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fmprobe.cli import app

    result = CliRunner().invoke(app, ["probe", str(tmp_path), "--probe-param", "lgbm.n_jobs=many", "-q"])
    assert isinstance(result.exception, ProbeParameterError)
    assert "'n_jobs' parameter of LGBMProbe" in str(result.exception)


def test_study_key_sets_probe_parameters_and_is_checked_on_load(tmp_path: Path) -> None:
    from fmprobe.study import load_study

    body = 'datasets = ["demo"]\nbackbones = ["efficientnet_lite0_imagenet"]\n[probe_params.lgbm]\nn_jobs = {}\n'
    (tmp_path / "ok.toml").write_text(body.format(1))
    assert load_study(tmp_path / "ok.toml").probe_params == {"lgbm": {"n_jobs": 1}}
    (tmp_path / "bad.toml").write_text(body.format('"many"'))
    with pytest.raises(ProbeParameterError, match=r"'n_jobs' parameter of LGBMProbe"):
        load_study(tmp_path / "bad.toml")
