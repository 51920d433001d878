"""What each backbone costs, read from the feature files the probe cells used (nothing is re-measured).

Per feature file: parameters, embedding width per readout (the stored features' D), the measured extraction
speed (images/s on the device that ran it), the seconds the extraction took and that device. A probe cell's
predictions name its feature file (``Predictions.meta["feature_file"]``). Files written before fmprobe stored a
number show it as "not recorded". The report's cost section is a table and, per dataset, the test score of each
model's validation-chosen configuration against its cost with the Pareto front marked; the recommendation names
the cheapest configuration statistically tied with the best.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np
import pandas as pd

from fmprobe._io import slug
from fmprobe.report.analysis import Choice, choose_on_val, feature_file_of, higher_is_better, with_models
from fmprobe.report.doc import Block, Cell, Heading, Para, Table

if TYPE_CHECKING:
    from fmprobe.report.build import ReportContext

NOT_RECORDED = "not recorded"
CostKey = tuple[str, str, int]  # (dataset, model, resolution)


@dataclass(frozen=True)
class FeatureCost:
    """The cost facts one feature file stores (None: not recorded by the fmprobe that wrote it)."""

    path: str
    parameters: int | None = None
    widths: dict[str, int] = field(default_factory=dict)  # readout -> embedding width D
    images_per_s: float | None = None
    seconds: float | None = None
    device: str = ""
    n_images: int = 0

    @property
    def seconds_per_image(self) -> float | None:
        return 1.0 / self.images_per_s if self.images_per_s else None


def _number(attrs: Mapping[str, object], name: str) -> float | None:
    value = attrs.get(name)
    with contextlib.suppress(TypeError, ValueError):
        number = float(value)  # type: ignore[arg-type]
        return number if math.isfinite(number) and number > 0 else None
    return None


def read_feature_cost(path: str | Path) -> FeatureCost | None:
    """The cost attributes of one feature file; None when the file cannot be read (moved, deleted)."""
    try:
        with h5py.File(path, "r") as h5:
            attrs = {k: h5.attrs[k] for k in h5.attrs}
            widths: dict[str, int] = {}
            n_images = 0
            for split in h5.values():
                if isinstance(split, h5py.Group) and "features" in split:
                    n_images += int(split.attrs.get("n_total", 0))
                    for readout, data in split["features"].items():
                        widths.setdefault(readout, int(data.shape[-1]))
    except OSError:
        return None
    parameters = _number(attrs, "parameters")
    return FeatureCost(str(path), int(parameters) if parameters else None, widths, _number(attrs, "images_per_s"),
                       _number(attrs, "extraction_seconds"), str(attrs.get("extraction_device", "")), n_images)  # fmt: skip


def feature_costs(rows: pd.DataFrame) -> dict[CostKey, FeatureCost]:
    """(dataset, model, resolution) -> the cost of its feature file, for the probe rows of ``rows`` (with a
    ``model`` column); one predictions file is read per key."""
    out: dict[CostKey, FeatureCost] = {}
    probe_rows = rows[rows["predictions"].astype(str) != ""]
    for (dataset, model, resolution), g in probe_rows.groupby(["dataset", "model", "resolution"], sort=True):
        for predictions in dict.fromkeys(g["predictions"].astype(str)):
            path = feature_file_of(predictions)
            if path and (cost := read_feature_cost(path)) is not None:
                out[(str(dataset), str(model), int(resolution))] = cost
                break
    return out


# ------------------------------------------------------------------------------------------------ measure


@dataclass(frozen=True)
class Measure:
    """Which cost a comparison uses: measured extraction seconds per image where every item has it, else the
    parameter count (machine-independent)."""

    name: str
    unit: str

    def of(self, cost: FeatureCost | None) -> float | None:
        if cost is None:
            return None
        return cost.seconds_per_image if self.name == SECONDS.name else cost.parameters

    def format(self, value: float) -> str:
        return f"{value * 1000:.3g} ms/image" if self.name == SECONDS.name else f"{value / 1e6:.3g} M parameters"


SECONDS = Measure("extraction seconds per image", "s/image")
PARAMETERS = Measure("parameters", "parameters")


def choose_measure(costs: Iterable[FeatureCost | None]) -> Measure | None:
    """Seconds per image if every item has it, else parameters if every item has them, else None."""
    costs = list(costs)
    for measure in (SECONDS, PARAMETERS):
        if costs and all(measure.of(c) is not None for c in costs):
            return measure
    return None


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both cost (lower) and score (higher), by rising cost."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


# ------------------------------------------------------------------------------------------------ report section


def _fmt(value: float | None, spec: str) -> str:
    return NOT_RECORDED if value is None else format(value, spec)


def cost_table(costs: Mapping[CostKey, FeatureCost]) -> Table:
    """One row per (model, resolution): the facts of its feature files, summed or averaged over datasets."""
    by_model: dict[tuple[str, int], list[FeatureCost]] = {}
    for (_, model, resolution), cost in sorted(costs.items()):
        by_model.setdefault((model, resolution), []).append(cost)
    body = []
    for (model, resolution), files in by_model.items():
        params = next((c.parameters for c in files if c.parameters), None)
        widths = ", ".join(f"{r} {d}" for r, d in sorted({k: v for c in files for k, v in c.widths.items()}.items()))
        rates = [c.images_per_s for c in files if c.images_per_s]
        seconds = [c.seconds for c in files]
        spent = sum(s for s in seconds if s is not None) if all(s is not None for s in seconds) else None
        devices = ", ".join(sorted({c.device for c in files if c.device})) or NOT_RECORDED
        body.append([Cell(model), Cell(str(resolution)), Cell(_fmt(params / 1e6 if params else None, ".2f")),
                     Cell(widths or NOT_RECORDED), Cell(_fmt(float(np.mean(rates)) if rates else None, ".1f")),
                     Cell(_fmt(spent, ".1f")), Cell(devices), Cell(str(len(files)))])  # fmt: skip
    caption = ("Per backbone and resolution, from its feature files: parameters (millions), embedding width per "
               "readout, measured extraction speed (images/s, mean over datasets) on the device that ran it, seconds "
               "spent extracting (sum over datasets). 'not recorded': written by an fmprobe that did not store it.")  # fmt: skip
    return Table(["model", "px", "params (M)", "width", "img/s", "seconds", "device", "files"], body, caption)


def cost_points(chosen: Mapping[str, Choice], dataset: str, costs: Mapping[CostKey, FeatureCost],
                measure: Measure) -> list[tuple[str, float, float]]:  # fmt: skip
    """(model, cost, test value) of each model's validation-chosen configuration with a recorded cost."""
    out = []
    for model, c in chosen.items():
        value = float(c.rows["value"].mean())
        x = measure.of(costs.get((dataset, model, int(c.resolution))))
        if x is not None and math.isfinite(value):
            out.append((model, float(x), value))
    return out


def cost_scatter(dataset: str, metric: str, points: list[tuple[str, float, float]], measure: Measure, higher: bool,
                 path: Path) -> Path:  # fmt: skip
    """Test score against cost per model; the Pareto front (nothing cheaper scores better) joined and ringed."""
    from fmprobe.report.plots import _figure, _save

    fig, ax = _figure(6.0, 4.0)
    xs, ys = [p[1] for p in points], [p[2] for p in points]
    front = pareto_front([(x, y if higher else -y) for x, y in zip(xs, ys, strict=True)])
    ax.scatter(xs, ys, color="tab:blue", zorder=3)
    ax.plot([xs[i] for i in front], [ys[i] for i in front], color="tab:red", drawstyle="steps-post", zorder=2,
            label="Pareto front")  # fmt: skip
    ax.scatter([xs[i] for i in front], [ys[i] for i in front], s=140, facecolors="none", edgecolors="tab:red", zorder=4)
    for name, x, y in points:
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.margins(x=0.15, y=0.1)  # room for the names of the outermost points
    if min(xs) > 0 and max(xs) / min(xs) > 20:
        ax.set_xscale("log")
    ax.set_xlabel(measure.name)
    ax.set_ylabel(f"test {metric}")
    ax.set_title(f"{dataset}: score against cost", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def cost_blocks(ctx: ReportContext) -> list[Block]:
    """The report's cost section: the table, then per dataset the accuracy-vs-cost scatter."""
    costs = feature_costs(with_models(ctx.df) if "model" not in ctx.df.columns else ctx.df)
    head = Heading("Cost")
    if not costs:
        return [head, Para(f"Cost {NOT_RECORDED}: no probe cell names a readable feature file.")]
    blocks: list[Block] = [head, cost_table(costs), Para(
        "Each point: a model's validation-chosen configuration, its test score against the cost of its feature file "
        "(measured extraction seconds per image where every model has it, else parameters). Ringed and joined: the "
        "Pareto front, where nothing cheaper scores higher.")]  # fmt: skip
    for v in ctx.views:
        chosen = choose_on_val(v.at(v.table_fraction), v.metric)
        measure = choose_measure(costs.get((v.name, m, c.resolution)) for m, c in chosen.items())
        points = cost_points(chosen, v.name, costs, measure) if measure else []
        if measure is None or len(points) < 2:
            continue
        path = cost_scatter(v.name, v.metric, points, measure, higher_is_better(v.metric),
                            ctx.figures.file(f"cost_{slug(v.name)}.png"))  # fmt: skip
        blocks.append(ctx.figures.image(path, f"{v.name}: test {v.metric} against {measure.name}"))
    return blocks


__all__ = ["NOT_RECORDED", "FeatureCost", "Measure", "choose_measure", "cost_blocks", "cost_table", "feature_costs",
           "pareto_front", "read_feature_cost"]  # fmt: skip
