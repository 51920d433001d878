"""The report's files from a synthetic study (tests/report/_report_study.py): what the Markdown, HTML and terminal
table say, and that every plot they show exists."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pandas as pd
import pytest
from _report_study import DATASETS, NAN_REASON

from fmprobe import cli
from fmprobe.errors import ResultsError
from fmprobe.report import N_RESAMPLES, format_table, write_report
from fmprobe.results import compact_results, read_results


def test_every_plot_is_a_png_the_report_shows(report) -> None:  # type: ignore[no-untyped-def]
    md, html = report.markdown.read_text(), report.html.read_text()
    links = re.findall(r"!\[([^\]]*)\]\(([^)]+)\)", md)
    vectors = re.findall(r"Vector: \[([^\]]+)\]", md)
    listed = [report.out_dir / rel for rel in [r for _, r in links] + vectors]
    assert sorted(listed) == sorted(report.plots)  # listed = linked
    pngs = [p for p in report.plots if p.suffix == ".png"]
    assert [p.with_suffix(".svg") for p in pngs] == [p for p in report.plots if p.suffix == ".svg"]  # one SVG each
    for p in pngs:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
        assert p.with_suffix(".svg").read_text().lstrip().startswith("<?xml")
    alts = {alt for alt, _ in links}
    assert "gain over baseline" in alts  # several datasets and fractions, single-label tasks: all three kinds
    assert all({f"data efficiency {d}", f"confusion matrix {d}"} <= alts for d in DATASETS)
    srcs = re.findall(r'src="([^"]*)"', html)
    assert len(srcs) == len(links) and all(s.startswith("data:image/png;base64,") for s in srcs)  # embedded
    from PIL import Image as PILImage

    widths = [int(w) for w in re.findall(r'<img alt="[^"]*" width="(\d+)"', html)]
    natural = [PILImage.open(report.out_dir / rel).width for _, rel in links]
    assert widths == [round(n / 2) for n in natural]  # 200-dpi PNGs shown at 100-dpi size: sharp, not doubled
    assert "<link" not in html and "<script" not in html and "http://" not in html and "https://" not in html
    assert "<strong>" in html and "<style>" in html
    assert "chosen on validation" in md and "fp-toy_fm-random-synth_tissue" in md
    assert "Baseline: `toy_imagenet` (chosen automatically" in md  # no baseline given: the registered one, said so
    assert not list(report.out_dir.rglob("*.tmp"))  # written atomically: no temporary file left behind


def test_rewriting_a_report_is_reproducible(study: Path, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1764633600")  # the report's date: 2025-12-02, whenever this runs
    first = write_report(study, tmp_path, n_resamples=50)
    before = {p: p.read_bytes() for p in (first.markdown, first.html, *first.plots, *first.tables)}
    second = write_report(study, tmp_path, n_resamples=50)  # replaces every file in place, byte for byte
    assert {p: p.read_bytes() for p in (second.markdown, second.html, *second.plots, *second.tables)} == before
    assert "written 2025-12-02 (UTC)" in second.markdown.read_text()
    assert not list(tmp_path.rglob("*.tmp"))


def test_report_cli_defaults_come_from_the_library(study: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "argv", ["fmprobe", "report", "--help"])
    cli.main()  # help is printed, nothing run
    assert f"(default: {N_RESAMPLES})" in " ".join(capsys.readouterr().out.replace("│", " ").split())
    monkeypatch.setattr(sys, "argv", ["fmprobe", "report", str(study), "--out", str(tmp_path), "--seed", "3"])
    cli.main()
    assert f"({N_RESAMPLES} resamples, seed 3)" in (tmp_path / "report.md").read_text()


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
    assert "Baseline: `toy_fm:random` (given)" in md and "![data efficiency synth_tissue]" in md
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
    assert "| toy_fm | —<sup>1</sup> |\n" in md  # one dataset: no "mean over datasets" column repeating it
    assert "<sup>1</sup> toy_fm on synth_lesions: this cell has no predictions file" in md
    assert "no confusion matrix — this cell has no predictions file" in md


def test_a_full_disk_mid_report_is_a_named_error_and_leaves_no_partial_file(study: Path, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import errno

    from matplotlib.figure import Figure

    def half_a_png(self: Figure, fname: object, *args: object, **kwargs: object) -> None:
        Path(str(fname)).write_bytes(b"\x89PNG\r\n\x1a\n half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", half_a_png)
    out = tmp_path / "report"
    with pytest.raises(ResultsError, match=rf"report folder {re.escape(str(out))} .*disk is full"):
        write_report(study, out, n_resamples=20)
    assert [p for p in out.rglob("*") if p.is_file()] == []  # no truncated PNG, no HTML, no temporary file

    def read_only(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("fmprobe.results.prove_writable", read_only)  # a read-only mount; checked before the bootstrap
    monkeypatch.setattr("fmprobe.report.build.headline", lambda *a: pytest.fail("computed before the check"))
    with pytest.raises(ResultsError, match=r"read-only.*--out"):
        write_report(study, tmp_path / "ro", n_resamples=20)


def test_a_truncated_results_table_is_a_named_error_in_the_report(study: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "results"
    shutil.copytree(study, copy)
    compact_results(copy)
    (copy / "results.parquet").write_bytes(b"PAR1")
    with pytest.raises(ResultsError, match=r"results.parquet is damaged.*delete"):
        write_report(copy, tmp_path / "report", n_resamples=20)


def test_a_class_name_that_is_not_utf8_reaches_the_report_escaped(study: Path, tmp_path: Path) -> None:
    df = read_results(study)
    name = b"site\xff".decode("utf-8", "surrogateescape")
    first = df["dataset"].iloc[0]
    df["dataset"] = pd.Series([name if d == first else d for d in df["dataset"]], dtype=object)  # as a notebook might
    paths = write_report(df, tmp_path / "report", n_resamples=20)
    assert "site\\xff" in paths.markdown.read_text() and "site\\xff" in paths.html.read_text()


def _headline(md: str) -> str:
    return md.split("## Headline")[1].split("## Dataset")[0]


def test_one_backbone_says_there_is_nothing_to_compare_and_marks_no_best(study: Path, tmp_path: Path) -> None:
    df = read_results(study)
    one = df[(df["backbone"] == "toy_fm") & (df["weights"] == "pretrained")]
    md = write_report(one, tmp_path, n_resamples=20).markdown.read_text()
    head = _headline(md)
    assert "Nothing to compare: only one backbone (`toy_fm`)" in head and "| backbone |" not in head  # no empty table
    datasets = md.split("## Dataset")[1].split("## Provenance")[0]
    tables = [line for line in datasets.splitlines() if line.startswith("| toy_fm |")]
    assert tables and not any("**" in line for line in tables)  # one candidate per column: no "best"
    assert "Bold" not in datasets


def test_a_flagged_cell_is_never_marked_best(study: Path, tmp_path: Path) -> None:
    df = read_results(study)
    df = df[df["dataset"] == "synth_tissue"].copy()
    best = (df["backbone"] == "toy_fm") & (df["weights"] == "pretrained") & (df["probe"] == "knn")
    df.loc[best, "flags"] = "degenerate: every test prediction is class fat (synthetic)"
    text = format_table(df, "synth_tissue")
    fm = next(line for line in text.splitlines() if line.startswith("toy_fm "))
    imagenet = next(line for line in text.splitlines() if line.startswith("toy_imagenet "))
    knn_fm, knn_imagenet = fm.split()[1], imagenet.split()[1]  # columns: backbone, knn [CI], logreg [CI]
    assert "*" not in knn_fm and knn_imagenet.endswith("*")  # the flagged best goes to the next, unflagged one
    assert "‡" in fm and "degenerate: every test prediction is class fat" in text


def test_one_dataset_has_no_mean_column_and_a_missing_comparison_reads_n_a(study: Path, tmp_path: Path) -> None:
    df = read_results(study)
    md = write_report(df[df["dataset"] == "synth_tissue"], tmp_path / "one", n_resamples=20).markdown.read_text()
    assert "mean over datasets" not in _headline(md).lower()  # it would repeat the dataset's column
    gains = next(line for line in _headline(md).splitlines() if line.startswith("| toy_fm |"))
    assert len(re.findall(r"[+-]\d+\.\d% \[", gains)) == 1
    partial = df[~((df["dataset"] == "synth_tissue") & (df["weights"] == "random"))]  # the control ran on one dataset
    md = write_report(partial, tmp_path / "partial", n_resamples=20).markdown.read_text()
    row = next(line for line in _headline(md).splitlines() if line.startswith("| toy_fm:random |"))
    cells = [c.strip() for c in row.split("|")[1:-1]]  # backbone | synth_lesions | synth_tissue | mean
    assert re.fullmatch(r"n/a<sup>\d</sup>", cells[2]) and "(n=1)" in cells[3]
    assert "toy_fm:random on synth_tissue: `toy_fm:random` was not run on this dataset" in md


def test_the_validation_note_is_said_once(report) -> None:  # type: ignore[no-untyped-def]
    md = report.markdown.read_text()
    assert md.count("were chosen on validation") == 1 and md.index("were chosen on validation") < md.index("## Headline")
