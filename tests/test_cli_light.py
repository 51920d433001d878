"""The CLI answers help, version and input errors before torch loads, and follows one set of conventions.

The torch checks run the real entry point in a fresh interpreter and read ``sys.modules`` there (the test process
itself has torch loaded by other tests). No timing here: bench/cli_latency.py measures the speed.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

import fmprobe
from fmprobe import cli
from fmprobe.progress import LineProgress, progress

ROOT = Path(__file__).resolve().parents[1]
CATALOG = ROOT / "fmprobe" / "backbones" / "catalog.py"

# Runs each argv through fmprobe.cli.main in one interpreter and reports its exit code and whether torch is loaded.
_RUNNER = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, sys.argv[2])
    from fmprobe.cli import main
    report = []
    for argv in json.loads(sys.argv[1]):
        if argv[:1] == ["@results"]:  # a small results folder, written through the results API (no torch)
            from _report_study import build_study
            build_study(__import__("pathlib").Path(argv[1]))
            continue
        sys.argv = ["fmprobe", *argv]
        try:
            main()
            code = 0
        except SystemExit as stop:
            code = stop.code
        report.append({"argv": argv, "code": code, "torch": "torch" in sys.modules})
    print(json.dumps(report))
    """
)


def _run_light(cases: list[list[str]], cwd: Path) -> list[dict]:
    out = subprocess.run(
        [sys.executable, "-c", _RUNNER, json.dumps(cases), str(ROOT / "tests" / "report")],
        cwd=cwd, capture_output=True, text=True, timeout=300, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_help_errors_and_report_never_import_torch(tmp_path: Path) -> None:
    results = tmp_path / "results"
    cases = [
        ["--help"], ["-h"], ["--version"], ["extract", "-h"], ["probe", "--help"], ["study", "-h"], ["finetune", "-h"],
        ["extract", "-d", "csv:missing.csv", "-b", "efficientnet_lite0_imagenet"],
        ["extract", "-d", "demo?bogus=1", "-b", "efficientnet_lite0_imagenet"],
        ["extract", "-d", "nosuchsource:x", "-b", "efficientnet_lite0_imagenet"],
        ["extract", "-d", "demo", "-b", "efficientnet_lite0_imagenet", "--weights", "missing.pt"],
        ["extract", "-d", "demo", "-b", "efficientnet_lite0_imagenet", "--dtype", "fp64"],
        ["extract", "-d", "demo", "-b", "efficientnet_lite0_imagenet", "--batch-size", "0"],
        ["finetune", "-d", "csv:missing.csv", "-b", "efficientnet_lite0_imagenet"],
        ["probe", "missing.h5", "--probe", "logistic"],
        ["merge", "missing.h5"],
        ["study", "missing.toml"],
        ["report", "missing"],
        ["@results", str(results)],
        ["report", str(results), "-o", str(tmp_path / "report"), "--bootstrap", "20"],
        ["leaderboard", str(results), "--bootstrap", "20"],
    ]  # fmt: skip
    report = _run_light(cases, tmp_path)
    assert [r["code"] for r in report] == [0] * 7 + [1] * 4 + [2] + [1] * 6 + [0, 0]  # 2: click's usage error
    assert [r["argv"] for r in report if r["torch"]] == []
    assert (tmp_path / "report" / "report.html").is_file()


@pytest.mark.skipif(not CATALOG.exists(), reason="needs the torch-free backbone catalog (fmprobe/backbones/catalog.py); "
                    "until it lands an unknown name is checked by the registry, which imports torch")  # fmt: skip
def test_an_unknown_backbone_is_refused_before_torch(tmp_path: Path) -> None:
    report = _run_light([["extract", "-d", "demo", "-b", "efficientnet_lite0_imagenett"]], tmp_path)
    assert report == [{"argv": report[0]["argv"], "code": 1, "torch": False}]


def test_error_messages_name_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    for argv, expected in [
        (["probe", "x.h5", "--probe", "logistic"], "unknown probe 'logistic'. Closest: logreg; known: knn, lgbm, logreg, proto."),
        (["merge", "nope.h5"], "nope.h5: no such file, and no extraction journal beside it"),
        (["extract", "-d", "csv:nope.csv", "-b", "x"], f"nope.csv: no such file or folder (looked for in {tmp_path})"),
    ]:
        monkeypatch.setattr(sys, "argv", ["fmprobe", *argv])
        with pytest.raises(SystemExit) as stop:
            cli.main()
        err = capsys.readouterr().err
        assert stop.value.code == 1 and expected in err and err.count("known:") <= 1, err


def test_help_shows_flags_choices_examples_and_short_names() -> None:
    runner = CliRunner()
    assert runner.invoke(cli.app, ["--version"]).output.strip() == f"fmprobe {fmprobe.__version__}"
    commands = ["extract", "merge", "export", "datasets", "probe", "report", "leaderboard", "demo", "study", "finetune", "env"]
    for command in commands:
        shown = runner.invoke(cli.app, [command, "-h"], env={"COLUMNS": "200"}).output
        assert "<bool>" not in shown and "Example" in shown and f"fmprobe {command}" in shown, command
        if "--out" in shown:
            assert "-o " in shown, command
    extract = runner.invoke(cli.app, ["extract", "-h"], env={"COLUMNS": "200"}).output
    assert "[auto|fp32|bf16|fp16]" in extract and "[auto|cpu|cuda|cuda:N]" in extract and "[fail|skip]" in extract
    probe = runner.invoke(cli.app, ["probe", "-h"], env={"COLUMNS": "200"}).output
    assert "--probes" in probe and "--readouts" in probe and "--train-fractions" in probe
    assert "--probe " not in probe and "--readout " not in probe  # the singular spellings are hidden aliases
    assert runner.invoke(cli.app, ["extract", "-d", "demo", "-b", "x", "--force", "true"]).exit_code == 2  # a flag


def test_singular_aliases_reach_the_plural_options(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}
    monkeypatch.setattr(fmprobe, "probe_features", lambda features, **kw: seen.update(kw) or (_ for _ in ()).throw(SystemExit(0)))
    args = ["probe", "f.h5", "--probe", "knn", "--readout=cls", "--train-fraction", "0.5,1", "-q"]
    assert CliRunner().invoke(cli.app, args).exit_code == 0
    assert seen["probes"] == ["knn"] and seen["readouts"] == ["cls"] and seen["train_fractions"] == [0.5, 1.0]


def test_progress_in_a_log_is_a_line_per_tenth(monkeypatch: pytest.MonkeyPatch) -> None:
    log = io.StringIO()  # not a terminal
    bar = progress(total=50, desc="demo", unit="img", file=log, mininterval=0)
    assert isinstance(bar, LineProgress)
    for _ in range(50):
        bar.update(1)
    bar.set_postfix_str("val auc 0.9")
    bar.close()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and len(lines) == 11  # 10%, ..., 100%, then the final postfix
    assert lines[0].startswith("demo: 5/50 img (10%), ") and "img/s, ETA " in lines[0]
    assert lines[-1].endswith("val auc 0.9")
    monkeypatch.setenv("RANK", "1")  # a torchrun worker: silent
    quiet = io.StringIO()
    with progress(total=10, file=quiet, mininterval=0) as bar:
        bar.update(10)
    assert quiet.getvalue() == ""
