"""Tables as CSV and LaTeX, provenance per feature file and of the report, published reference numbers, alpha."""

from __future__ import annotations

import csv
import shlex
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from _helpers import make_images, write_manifest
from _report_study import DATASETS

from fmprobe import cli
from fmprobe import extract_features as extract
from fmprobe._io import command_line
from fmprobe.report import write_report
from fmprobe.report.doc import Cell, Heading, Table, latex_escape, table_names, to_csv, to_latex
from fmprobe.report.options import ALPHA, ReportOptions
from fmprobe.report.reference import ReferenceFileError
from fmprobe.results import load_predictions, read_results, save_predictions
from fmprobe.store import FeatureFile
from fmprobe.tasks import PRIMARY_METRIC


def test_every_table_is_exported_as_csv_and_booktabs_latex_and_listed(report) -> None:  # type: ignore[no-untyped-def]
    names = {p.name for p in report.tables}
    for ds, (task, _) in DATASETS.items():  # dataset + table kind, stable and readable
        assert {f"{ds}_{PRIMARY_METRIC[task]}.csv", f"{ds}_{PRIMARY_METRIC[task]}_mean-over-repeats.tex"} <= names
    assert {"headline_gains.csv", "headline_gains.tex", "provenance_datasets.csv"} <= names
    assert {f"recommendation_{ds}.csv" for ds in DATASETS} <= names
    csvs = sorted(p for p in report.tables if p.suffix == ".csv")
    assert sorted(p.with_suffix(".csv") for p in report.tables if p.suffix == ".tex") == csvs  # one pair per table
    md = report.markdown.read_text()
    assert all(f"tables/{p.name}" in md for p in report.tables)  # the report lists them
    primary = next(p for p in csvs if p.name.startswith("synth_lesions_") and "mean" not in p.name and "roc" in p.name)
    rows = list(csv.reader(primary.open()))
    assert rows[0] == ["backbone", "knn", "logreg"]
    fm = next(r for r in rows if r[0] == "toy_fm")
    value, ci = fm[2].split(" [")  # e.g. "0.845 [0.769, 0.911]†"
    assert float(value) > 0.5 and ci.rstrip("]†").count(", ") == 1
    tex = primary.with_suffix(".tex").read_text()
    assert tex.index(r"\toprule") < tex.index(r"\midrule") < tex.index(r"\bottomrule")
    assert r"toy\_fm" in tex and r"\textbf{" in tex and "toy_fm" not in tex.replace(r"toy\_fm", "")


def test_latex_escapes_special_characters_and_cells_keep_their_ci() -> None:
    assert latex_escape(r"50% of a_b & c#d {e} ~ ^ $ \ ") == (
        r"50\% of a\_b \& c\#d \{e\} \textasciitilde{} \textasciicircum{} \$ \textbackslash{} "
    )
    table = Table(["model", "auc"], [[Cell("x_1"), Cell("0.845", bold=True, tail=" [0.769, 0.911]", mark="†", note=1)]],
                  "**Bold**: best; `x_1` is 100% ours.", {1: "a_b"})  # fmt: skip
    tex = to_latex(table)
    assert r"\textbf{0.845} [0.769, 0.911]\textdagger{}\textsuperscript{1}" in tex and r"\begin{tabular}{lr}" in tex
    assert r"\caption{\textbf{Bold}: best; \texttt{x\_1} is 100\% ours.}" in tex and r"\textsuperscript{1} a\_b" in tex
    assert to_csv(table) == 'model,auc\nx_1,"0.845 [0.769, 0.911]†[1]"\n'  # quoted: the CI has a comma
    blocks = [Heading("Dataset `ds`"), table, table, Heading("Per label", 3), Table(["a"], [])]
    assert [n for n, _, _ in table_names(blocks)] == ["ds_table", "ds_table-2", "ds_per-label"]


def _features(tmp_path: Path) -> Path:
    labels = ["benign", "malignant"] * 6  # small: the provenance is the point, not the features
    names = make_images(tmp_path / "imgs", labels)
    rows = [[f"imgs/{n}", lab, f"p{i}"] for i, (n, lab) in enumerate(zip(names, labels, strict=True))]
    manifest = write_manifest(tmp_path / "manifest.csv", ["path", "label", "group"], rows)
    return extract(f"csv:{manifest}", out=tmp_path / "features", backbone="efficientnet_lite0_imagenet:random",
                   resolution=32, batch_size=8, num_workers=0, dtype="fp32", progress=False).path  # fmt: skip


def _pointing_at(study: Path, tmp_path: Path, files: dict[str, str]) -> pd.DataFrame:
    """The synthetic study's synth_lesions rows, each model's predictions naming ``files[backbone:weights]``."""
    df = read_results(study)
    df = df[df["dataset"] == "synth_lesions"].copy()
    out = []
    for cell, rows in df.groupby("cell_id"):
        p = load_predictions(rows["predictions"].iloc[0])
        feature_file = files.get(f"{rows['backbone'].iloc[0]}:{rows['weights'].iloc[0]}", "")
        path = save_predictions(tmp_path / "preds", str(cell), p.ids, p.y_true, p.y_score, {**p.meta, "feature_file": feature_file})
        out.append(rows.assign(predictions=str(tmp_path / "preds" / path)))  # saved relative to its folder
    return pd.concat(out)


def test_provenance_reads_each_feature_file_and_says_what_older_files_lack(study: Path, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(sys, "argv", ["fmprobe", "extract", "csv:my data.csv"])
    new = _features(tmp_path)
    attrs = FeatureFile(new).attrs
    assert attrs["command_line"] == "fmprobe extract 'csv:my data.csv'" and attrs["gpu"] == "cpu" and attrs["cpu_model"]
    assert command_line(["/venv/lib/fmprobe/__main__.py", "report", "a b"]) == "fmprobe report 'a b'"  # python -m
    monkeypatch.setattr(sys, "argv", ["other", "command"])
    again = extract(f"csv:{tmp_path / 'manifest.csv'}", out=tmp_path / "features", backbone="efficientnet_lite0_imagenet:random",
                    resolution=32, batch_size=8, num_workers=0, dtype="fp32", progress=False)  # fmt: skip
    assert again.cache_hit and again.path == new  # the command line is never part of the cache key
    old = tmp_path / "old.h5"
    old.write_bytes(b"")
    df = _pointing_at(study, tmp_path, {"toy_fm:pretrained": str(new), "toy_imagenet:pretrained": str(old)})
    real = FeatureFile
    monkeypatch.setattr("fmprobe.report.provenance.FeatureFile", lambda p: SimpleNamespace(
        attrs={"fmprobe_version": "0.3.0", "torch_version": "2.1", "timm_version": "0.9", "compute_dtype": "fp32",
               "created_utc": "2025-01-01T00:00:00+00:00"}) if Path(p) == old else real(p))  # fmt: skip
    monkeypatch.setattr(sys, "argv", ["fmprobe", "report", "results", "--out", "my report"])
    md = write_report(df, tmp_path / "report", n_resamples=20).markdown.read_text()
    prov = md.split("## Provenance")[1]
    fm = next(line for line in prov.splitlines() if line.startswith("| synth_lesions | toy_fm @224 |") and " / " in line)
    assert f"| {attrs['fmprobe_version']} / {attrs['torch_version']} / {attrs['timm_version']} | fp32 |" in fm
    made = next(line for line in prov.splitlines() if line.startswith("| synth_lesions | toy_fm @224 | ") and "device" in line)
    assert f"| {attrs['cpu_model']}; device: cpu | fmprobe extract 'csv:my data.csv' |" in made
    imagenet = next(line for line in prov.splitlines() if line.startswith("| synth_lesions | toy_imagenet @224 | 0.3.0"))
    assert "| 2025-01-01 00:00:00 |" in imagenet
    assert "| synth_lesions | toy_imagenet @224 | not recorded | not recorded |" in prov  # machine and command line
    files = prov.split("| fmprobe / torch / timm |")[1].split("\n\n")[0]
    assert "toy_fm:random" not in files  # its cells name no feature file: no row, rather than a guess
    assert f"by `{shlex.join(sys.argv)}`" in prov and "This report: fmprobe " in prov  # the report's own
    assert md.count("were chosen on validation") == 1  # once (in the title), not again under provenance


REFERENCE = "dataset,method,metric,value,source\nsynth_lesions,ResNet-18 & co (paper),roc_auc,0.777,Doe et al. 2024, Table 2\n"


def test_reference_numbers_are_shown_beside_ours_marked_not_measured_and_never_recommended(study: Path, tmp_path: Path) -> None:
    ref = tmp_path / "published.csv"
    ref.write_text(REFERENCE.replace("Doe et al. 2024, Table 2", '"Doe et al. 2024, Table 2"'))
    paths = write_report(study, tmp_path / "r", n_resamples=20, reference=ref)
    md = paths.markdown.read_text()
    lesions = md.split("## Dataset `synth_lesions`")[1].split("## Dataset")[0]
    assert "Published numbers (not measured here)" in lesions and "**Not measured here.**" in lesions
    row = next(line for line in lesions.splitlines() if "ResNet-18" in line)
    assert "| roc_auc | 0.777 |" in row and "Doe et al. 2024, Table 2" in row and "(toy_fm, " in row  # ours beside
    assert "ResNet-18" not in md.split("## Dataset")[0]  # never in the recommendation or the headline
    assert "ResNet-18" not in md.split("## Dataset `synth_tissue`")[1].split("## Provenance")[0]
    tex = (paths.out_dir / "tables" / "synth_lesions_reference.tex").read_text()
    assert r"ResNet-18 \& co (paper)" in tex


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("dataset,method,value,source\nsynth_lesions,x,0.7,y\n", r"published.csv, line 1: the header lacks column\(s\) metric"),
        ("dataset,method,metric,value,source\nsynth_lesions,x,roc_auc,91.2%,y\n", r"line 2: value '91.2%' is not a number.*0.912"),
        ("dataset,method,metric,value,source\n\nsynth_lesion,x,roc_auc,0.9,y\n", r"line 3: dataset 'synth_lesion' is not in these results.*Closest: synth_lesions"),
        ("dataset,method,metric,value,source\nsynth_lesions,x,roc_auc,0.9,\n", r"line 2: empty source.*paper"),
    ],
)
def test_a_bad_reference_file_is_refused_naming_the_file_line_and_fix(study: Path, tmp_path: Path, text: str, match: str) -> None:
    ref = tmp_path / "published.csv"
    ref.write_text(text)
    with pytest.raises(ReferenceFileError, match=match):
        write_report(study, tmp_path / "r", n_resamples=20, reference=ref)
    assert not (tmp_path / "r").exists()  # refused before any work


def test_report_cli_takes_alpha_and_reference(study: Path, tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    assert ReportOptions.alpha == ALPHA  # derived from the recommendation's default
    monkeypatch.setattr(sys, "argv", ["fmprobe", "report", "--help"])
    cli.main()
    assert f"(default: {ALPHA})" in " ".join(capsys.readouterr().out.replace("│", " ").split())
    ref = tmp_path / "published.csv"
    ref.write_text(REFERENCE)
    out = tmp_path / "report"
    monkeypatch.setattr(sys, "argv", ["fmprobe", "report", str(study), "--out", str(out), "--alpha", "0.01",
                                      "--reference", str(ref), "--bootstrap", "20"])  # fmt: skip
    cli.main()
    md = (out / "report.md").read_text()
    assert "alpha = 0.01" in md and "ResNet-18" in md
