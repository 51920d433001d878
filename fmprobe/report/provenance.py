"""Where the numbers come from: per feature file the software versions, command line, date, machine and compute
dtype stored in it (files written before a field existed say "not recorded"), and the report's own."""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from fmprobe._io import __version__, command_line, cpu_model
from fmprobe.errors import FmprobeError
from fmprobe.report.analysis import feature_file_of, model_label
from fmprobe.report.doc import Block, Cell, Table
from fmprobe.store import FeatureFile

NOT_RECORDED = "not recorded"


def report_date() -> str:
    """Today (UTC), or the day of ``SOURCE_DATE_EPOCH`` when set (reproducible builds), so a rewritten report is
    byte for byte the same on the same day."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    when = datetime.fromtimestamp(int(epoch), UTC) if epoch.isdigit() else datetime.now(UTC)
    return when.date().isoformat()


def report_provenance() -> str:
    """The report's own provenance, one sentence."""
    return (
        f"This report: fmprobe {__version__}, written {report_date()} (UTC) on {cpu_model()} "
        f"({platform.system() or 'unknown OS'}), by `{command_line()}`."
    )


def _attrs(path: str) -> dict[str, object] | str:
    """The feature file's stored attributes, or why they cannot be read."""
    try:
        return FeatureFile(Path(path)).attrs
    except FmprobeError as e:
        return f"unreadable: {str(e).split('. ')[0]}"


def _field(attrs: dict[str, object], key: str) -> str:
    value = attrs.get(key)
    if value is None or str(value) == "":
        return NOT_RECORDED
    return value.decode() if isinstance(value, bytes) else str(value)


def _when(attrs: dict[str, object]) -> str:
    """The creation time as ``2026-12-02 01:27:21`` (UTC, said in the header)."""
    return _field(attrs, "created_utc").replace("T", " ").removesuffix("+00:00")


def feature_file_table(df: pd.DataFrame) -> list[Block]:
    """Per feature file behind the probe cells: versions, compute dtype and date; then machine and command line (two
    tables, so neither runs off the page)."""
    first = df.drop_duplicates(["dataset", "backbone", "weights", "resolution", "fingerprint"]).sort_values(
        ["dataset", "backbone", "weights", "resolution"]
    )
    versions, made, seen = [], [], set()
    for r in first.itertuples():
        path = feature_file_of(r.predictions)
        if not path or path in seen:
            continue
        seen.add(path)
        attrs = _attrs(path)
        label = [Cell(r.dataset), Cell(f"{model_label(r.backbone, r.weights)} @{r.resolution}")]
        if isinstance(attrs, str):  # unreadable: the reason, once
            versions.append(label + [Cell(attrs), Cell(NOT_RECORDED), Cell(NOT_RECORDED)])
            made.append(label + [Cell(NOT_RECORDED), Cell(NOT_RECORDED)])
            continue
        stack = " / ".join(_field(attrs, k) for k in ("fmprobe_version", "torch_version", "timm_version"))
        versions.append(label + [Cell(stack), Cell(_field(attrs, "compute_dtype")), Cell(_when(attrs))])
        cpu, gpu = _field(attrs, "cpu_model"), _field(attrs, "gpu")
        machine = NOT_RECORDED if cpu == gpu == NOT_RECORDED else f"{cpu}; device: {gpu}"
        made.append(label + [Cell(machine), Cell(_field(attrs, "command_line"))])
    if not versions:
        return []
    return [
        Table(
            ["dataset", "backbone @ resolution", "fmprobe / torch / timm", "compute dtype", "created (UTC)"],
            versions,
            "The feature files behind the probe cells, as stored in each file when it was extracted "
            f"(\"{NOT_RECORDED}\": a file written before fmprobe stored that field; fine-tuned cells have none).",
            name="feature_files",
        ),
        Table(["dataset", "backbone @ resolution", "machine (CPU; device)", "command line"], made,
              "Where and how each feature file was extracted.", name="feature_file_commands"),
    ]  # fmt: skip
