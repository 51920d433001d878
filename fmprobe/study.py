"""`fmprobe study FILE.toml`: a grid of datasets x backbones x readouts x resolutions x probes x fractions x repeats.

Extraction first (each backbone once per dataset and resolution, through the cache), then every probe cell, then
the report. Every stage is resumable: finished feature files are cache hits, an interrupted extraction resumes
from its journal, finished probe cells are skipped. ``--dry-run`` prints the grid and its estimated cost only.

Study file (paths are relative to the study file's folder)::

    name = "quick"
    baseline = "efficientnet_lite0_imagenet"      # reference backbone of the headline view
    datasets = ["../../shared/data/pneumoniamnist.npz", "medmnist:breastmnist@64"]
    backbones = ["efficientnet_lite0_imagenet", "efficientnet_lite0_imagenet:random"]
    readouts = []              # default: each backbone's own
    resolutions = []           # default: each backbone's native size
    probes = ["logreg", "knn", "lgbm"]
    train_fractions = [1.0]
    repeats = 1
    seed = 0
    [weights]                  # offline checkpoints, per backbone name
    dinov2_vitb14 = "weights/dinov2_vitb14_pretrain.pth"
    [extract]                  # any fmprobe.extract_features keyword
    batch_size = 64
    [finetune]                 # optional: trained settings next to the probes (same rows, same report)
    settings = ["linear", "full"]   # linear, attention, partial:K, full
    epochs = 10                # and any other fmprobe.run_finetune keyword (lr, batch_size, patience, ...)
"""

from __future__ import annotations

import os
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fmprobe.backbones import get_spec, parse_name
from fmprobe.datasets import load_dataset, parse_spec
from fmprobe.errors import FmprobeError
from fmprobe.extract import cache_path, extract_features
from fmprobe.finetune import parse_setting, plot_training_curves, run_finetune
from fmprobe.probing import DEFAULT_PROBES, cell_repeats, probe_features
from fmprobe.report import write_report

PATH_SOURCES = {"npz", "csv", "folder", "aptos2019", "isic2019", "cbis-ddsm", "chexpert"}  # arguments that are paths
KEYS = {"name", "baseline", "datasets", "backbones", "readouts", "resolutions", "probes", "train_fractions",
        "repeats", "seed", "weights", "extract", "out", "bootstrap", "finetune"}  # fmt: skip
Log = Callable[[str], None]


@dataclass(frozen=True)
class Study:
    name: str
    path: Path
    datasets: tuple[str, ...]
    backbones: tuple[str, ...]
    readouts: tuple[str, ...] = ()
    resolutions: tuple[int, ...] = ()
    probes: tuple[str, ...] = DEFAULT_PROBES
    train_fractions: tuple[float, ...] = (1.0,)
    repeats: int = 1
    seed: int = 0
    baseline: str | None = None
    weights: dict[str, str] = field(default_factory=dict)
    extract: dict[str, object] = field(default_factory=dict)
    out: Path = Path("runs")
    bootstrap: int = 1000
    finetune: dict[str, object] = field(default_factory=dict)  # the [finetune] table: settings + run_finetune keywords

    def finetune_jobs(self) -> list[tuple[str, str, int | None, str]]:
        """(dataset, backbone, resolution, setting) per finetune run, in the order they run."""
        settings = list(self.finetune.get("settings", []))  # type: ignore[call-overload]
        return [(d, b, r, s) for d in self.datasets for b in self.backbones for r in self.resolutions or (None,) for s in settings]

    def extraction_jobs(self) -> list[tuple[str, str, int | None, tuple[str, ...]]]:
        """(dataset, backbone, resolution, readouts) per feature file, in the order they run."""
        jobs = []
        for dataset in self.datasets:
            for backbone in self.backbones:
                spec = get_spec(parse_name(backbone)[0])
                readouts = tuple(r for r in self.readouts if spec.supports(r)) or (spec.default_readout,)
                for resolution in self.resolutions or (None,):
                    jobs.append((dataset, backbone, resolution, readouts))
        return jobs

    def probe_cells(self) -> int:
        per_file = sum(cell_repeats(p, f, self.repeats) for p in self.probes for f in self.train_fractions)
        return sum(len(readouts) for *_, readouts in self.extraction_jobs()) * per_file


def _resolve_dataset(spec: str, base: Path) -> str:
    """Make a relative path inside a dataset spec relative to the study file, not to the working directory."""
    source, argument, _ = parse_spec(spec)
    body, sep, query = spec.partition("?")
    if source in PATH_SOURCES and argument and not Path(argument).is_absolute():
        absolute = str((base / argument).resolve())
        body = f"{source}:{absolute}" if body.startswith(f"{source}:") else absolute
    return body + (sep + query if sep else "")


def load_study(path: str | Path, out: str | Path | None = None) -> Study:
    """Read and validate a study file, with errors naming the file and the key."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise FmprobeError(f"study file {path} not found; `ls studies/` shows the shipped ones.") from None
    except tomllib.TOMLDecodeError as err:
        raise FmprobeError(f"{path}: not valid TOML ({err}).") from None
    unknown = sorted(set(data) - KEYS)
    if unknown:
        raise FmprobeError(f"{path}: unknown key(s) {unknown}; allowed: {', '.join(sorted(KEYS))}.")
    for key in ("datasets", "backbones"):
        if not data.get(key):
            raise FmprobeError(f"{path}: '{key}' must list at least one entry.")

    def as_tuple(key: str, kind: type) -> tuple:
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, kind) for v in value):
            raise FmprobeError(f"{path}: '{key}' must be a list of {kind.__name__}.")
        return tuple(value)

    base = path.parent
    study = Study(
        name=str(data.get("name", path.stem)),
        path=path,
        datasets=tuple(_resolve_dataset(d, base) for d in as_tuple("datasets", str)),
        backbones=as_tuple("backbones", str),
        readouts=as_tuple("readouts", str),
        resolutions=as_tuple("resolutions", int),
        probes=as_tuple("probes", str) or DEFAULT_PROBES,
        train_fractions=tuple(float(f) for f in data.get("train_fractions", [1.0])),
        repeats=int(data.get("repeats", 1)),
        seed=int(data.get("seed", 0)),
        baseline=data.get("baseline"),
        weights={k: str((base / v).resolve()) for k, v in data.get("weights", {}).items()},
        extract=dict(data.get("extract", {})),
        out=Path(out) if out else (Path(os.path.normpath(base / data["out"])) if "out" in data else Path("runs") / str(data.get("name", path.stem))),
        bootstrap=int(data.get("bootstrap", 1000)),
        finetune=_finetune_table(data.get("finetune", {}), path),
    )
    for backbone in study.backbones:  # unknown names fail before any work, with suggestions
        get_spec(parse_name(backbone)[0])
    if study.baseline and study.baseline not in study.backbones:
        raise FmprobeError(f"{path}: baseline {study.baseline!r} is not among the backbones {list(study.backbones)}.")
    from fmprobe.probes import PROBES

    for probe in study.probes:
        PROBES.get(probe)
    return study


def _finetune_table(table: object, path: Path) -> dict[str, object]:
    """Check the [finetune] table: a list of settings plus run_finetune keywords (names checked, values later)."""
    import inspect

    if not isinstance(table, dict):
        raise FmprobeError(f"{path}: [finetune] must be a table (settings = [...], epochs = ..., ...).")
    settings = table.get("settings", [])
    if not isinstance(settings, list) or not all(isinstance(s, str) for s in settings) or (table and not settings):
        raise FmprobeError(f"{path}: [finetune] settings must list e.g. [\"linear\", \"partial:2\", \"full\"].")
    for setting in settings:
        parse_setting(setting)
    allowed = set(inspect.signature(run_finetune).parameters) - {"dataset", "backbone", "setting", "weights", "out",
                                                                  "seed", "progress", "log", "max_images_per_split"}  # fmt: skip
    unknown = sorted(set(table) - allowed - {"settings"})
    if unknown:
        raise FmprobeError(f"{path}: [finetune] unknown key(s) {unknown}; allowed: settings, {', '.join(sorted(allowed))}.")
    return dict(table)


@dataclass(frozen=True)
class CostLine:
    dataset: str
    backbone: str
    resolution: int
    images: int
    seconds: float | None
    source: str  # "cached", "measured", "estimated"


def estimate_cost(study: Study, max_images: int | None = None, log: Log = lambda m: None) -> list[CostLine]:
    """Images x backbones, with time from earlier measurements (feature files' images/s) or a FLOP estimate."""
    from fmprobe.runtime import choose_device

    device = choose_device(str(study.extract.get("device", "auto")))
    lines = []
    sizes: dict[str, int] = {}
    for dataset, backbone, resolution, _ in study.extraction_jobs():
        if dataset not in sizes:
            try:
                sizes[dataset] = load_dataset(dataset, max_images).num_images
            except FmprobeError as err:
                log(f"  {dataset}: cannot be read yet ({str(err).splitlines()[0]})")
                sizes[dataset] = 0
        spec = get_spec(parse_name(backbone)[0])
        size = resolution or spec.native_resolution
        measured = _measured_rate(study.out / "features", backbone, size)
        if measured:
            lines.append(CostLine(dataset, backbone, size, sizes[dataset], sizes[dataset] / measured, "measured"))
        else:
            rate = _flop_rate(spec, size, device)
            lines.append(CostLine(dataset, backbone, size, sizes[dataset], sizes[dataset] / rate if rate else None, "estimated"))
    return lines


def _measured_rate(features: Path, backbone: str, resolution: int) -> float | None:
    from fmprobe.store import FeatureFile

    rates = []
    for path in features.rglob("*.h5") if features.exists() else []:
        try:
            f = FeatureFile(path)
        except FmprobeError:
            continue
        if f.backbone == backbone and f.resolution == resolution and float(f.attrs.get("images_per_s", 0)) > 0:
            rates.append(float(f.attrs["images_per_s"]))
    return max(rates) if rates else None


def _flop_rate(spec, size: int, device) -> float | None:
    """Images/s from the model's FLOPs (counted on the meta device) and this machine's measured matmul speed,
    at an efficiency of 30% (what convolution and attention stacks reach on CPUs here)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with torch.device("meta"):
            model = spec.build(size)
            counter = FlopCounterMode(display=False)
            with counter:
                model.forward_readouts(torch.empty(1, 3, size, size), (spec.default_readout,))
        flops = counter.get_total_flops()
    except Exception:
        return None
    return _machine_flops(device) * 0.3 / max(flops, 1)


_MACHINE: dict[str, float] = {}


def _machine_flops(device) -> float:
    import torch

    key = str(device)
    if key not in _MACHINE:
        a = torch.randn(1024, 1024, device=device)
        torch.mm(a, a)
        start = time.perf_counter()
        for _ in range(8):
            torch.mm(a, a)
        if device.type == "cuda":
            torch.cuda.synchronize()
        _MACHINE[key] = 8 * 2 * 1024**3 / (time.perf_counter() - start)
    return _MACHINE[key]


def format_plan(study: Study, costs: list[CostLine]) -> str:
    lines = [f"study {study.name!r} ({study.path}): {len(study.datasets)} dataset(s) x {len(study.backbones)} backbone(s)"
             f" x {len(study.resolutions) or 1} resolution(s); {study.probe_cells()} probe cells"
             f" ({', '.join(study.probes)}; fractions {', '.join(f'{f:g}' for f in study.train_fractions)};"
             f" repeats {study.repeats}); output {study.out}"]  # fmt: skip
    total, unknown = 0.0, 0
    for c in costs:
        when = "?" if c.seconds is None else _duration(c.seconds)
        lines.append(f"  extract {c.dataset} x {c.backbone} @ {c.resolution}px: {c.images} images, ~{when} ({c.source})")
        if c.seconds is None:
            unknown += 1
        else:
            total += c.seconds
    if study.finetune_jobs():
        options = {k: v for k, v in study.finetune.items() if k != "settings"}
        lines.append(f"  finetune: {len(study.finetune_jobs())} run(s), settings {', '.join(study.finetune['settings'])}"  # type: ignore[arg-type]
                     + (f" ({', '.join(f'{k}={v}' for k, v in options.items())})" if options else ""))  # fmt: skip
    images = sum(c.images for c in costs)
    lines.append(f"total: {images} image-forwards, ~{_duration(total)} of extraction" + (f" (+{unknown} unestimated)" if unknown else ""))
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f}min" if seconds < 7200 else f"{seconds / 3600:.1f}h"


def run_study(
    path: str | Path,
    *,
    out: str | Path | None = None,
    dry_run: bool = False,
    max_images: int | None = None,
    progress: bool = True,
    log: Log = lambda message: print(message, file=sys.stderr),
) -> Study:
    """Run (or, with ``dry_run``, only plan) a study; everything finished before is reused."""
    study = load_study(path, out)
    log(format_plan(study, estimate_cost(study, max_images, log)))
    if dry_run:
        return study
    feature_files = []
    for dataset, backbone, resolution, readouts in study.extraction_jobs():
        base = parse_name(backbone)[0]
        result = extract_features(
            dataset, backbone, weights=study.weights.get(base), resolution=resolution, readouts=readouts,
            out=study.out / "features", max_images_per_split=max_images, progress=progress, log=log,
            **study.extract,  # type: ignore[arg-type]
        )  # fmt: skip
        feature_files.append(result.path)
    probe_features(
        feature_files, probes=study.probes, readouts=None, train_fractions=study.train_fractions,
        repeats=study.repeats, seed=study.seed, out=study.out / "results", n_resamples=study.bootstrap,
        progress=progress, log=log,
    )  # fmt: skip
    options = {k: v for k, v in study.finetune.items() if k != "settings"}
    for dataset, backbone, resolution, setting in study.finetune_jobs():
        run = run_finetune(
            dataset, backbone, setting=setting, weights=study.weights.get(parse_name(backbone)[0]), resolution=resolution,
            seed=study.seed, out=study.out, max_images_per_split=max_images, progress=progress, log=log,
            **{"n_resamples": study.bootstrap, **options},  # type: ignore[arg-type]
        )  # fmt: skip
        if run.history and not run.skipped:
            plot_training_curves(run.history, run.run_dir / "curves.png", title=f"{backbone} · {run.probe}")
    paths = write_report(study.out / "results", study.out / "report", baseline=study.baseline)
    log(f"report: {paths.html}")
    return study


__all__ = ["Study", "cache_path", "estimate_cost", "format_plan", "load_study", "run_study"]
