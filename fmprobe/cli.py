"""The command line: a thin typer layer over the public API in ``fmprobe/__init__.py``.

Commands parse options, call one API function and render its result. Library errors (FmprobeError) become one
message and exit code 1; set FMPROBE_TRACEBACK=1 for the full traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperCommand, TyperGroup

import fmprobe
from fmprobe import checks
from fmprobe.errors import FmprobeError

# Singular spellings kept as hidden aliases of the plural options (one name per idea across commands).
ALIASES = {"--readout": "--readouts", "--probe": "--probes", "--train-fraction": "--train-fractions"}


class _Command(TyperCommand):
    """Every fmprobe command: ``-o`` for ``--out``, flags shown as flags (no ``<bool>``), choices as ``[a|b|c]``, the
    singular aliases of :data:`ALIASES`, and output as asked: ``-q`` keeps results, warnings and errors; a torchrun
    rank > 0 says only errors."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:  # every --out answers to -o too
            if "--out" in getattr(param, "opts", ()) and "-o" not in param.opts:
                param.opts.append("-o")

    def get_params(self, ctx: Any) -> list[Any]:
        return _tidy(super().get_params(ctx), ctx)

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        names = {opt for param in self.params for opt in getattr(param, "opts", ())}
        return super().parse_args(ctx, [_unalias(arg, names) for arg in args])

    def invoke(self, ctx: Any) -> Any:
        from fmprobe.progress import is_main_process  # tqdm: only once a command runs

        logger = logging.getLogger("fmprobe")
        level = logger.level
        if not is_main_process():
            logger.setLevel(logging.ERROR)
        elif ctx.params.get("quiet"):
            logger.setLevel(logging.WARNING)
        try:
            return super().invoke(ctx)
        finally:
            logger.setLevel(level)


class _Group(TyperGroup):
    """The ``fmprobe`` group: its own options (``--version``, ``-h``) shown like the commands'."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _tidy(super().get_params(ctx), ctx)


def _tidy(params: list[Any], ctx: Any) -> list[Any]:
    """How ``--help`` shows options: a flag with no value placeholder (typer shows ``<bool>``), choices as
    ``[a|b|c]``."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
        elif getattr(getattr(param, "type_descriptor", None), "is_choice", False) and param.metavar is None:
            param.metavar = "[" + param.display_type(ctx).strip("<>") + "]"  # typer's <a|b|c> as click's
    return params


def _unalias(arg: str, names: set[str]) -> str:
    """``--probe x`` / ``--probe=x`` as ``--probes``, where this command has the plural option."""
    name, eq, value = arg.partition("=")
    plural = ALIASES.get(name)
    return plural + eq + value if plural in names else arg


class _App(typer.Typer):
    """The typer app whose commands are all :class:`_Command` (also those other modules add)."""

    def command(self, *args: Any, cls: Any = None, **kwargs: Any) -> Any:  # type: ignore[override]
        return super().command(*args, cls=cls or _Command, **kwargs)


app = _App(
    name="fmprobe",
    cls=_Group,
    help="Which pretrained image backbone transfers best to your medical images? Extract, probe, report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"fmprobe {fmprobe.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", "-V", callback=_print_version, is_eager=True, metavar="", help="Print the version and exit.")] = False,
) -> None:
    """Which pretrained image backbone transfers best to your medical images? Extract, probe, report."""


def _examples(*commands: str) -> str:
    """The ``Examples`` block at the end of a command's ``--help``."""
    return "Examples:\n\n" + "\n\n".join(f"  {c}" for c in commands)


def _say(text: str) -> None:
    """A result line on stdout; under torchrun only rank 0 says it."""
    from fmprobe.progress import is_main_process

    if is_main_process():
        typer.echo(text)


# Option types, declared once and shared (None means "the backbone's / dataset's default").
DatasetOpt = Annotated[str, typer.Option("--dataset", "-d", help="Dataset spec, e.g. demo, medmnist:pneumoniamnist@224 or csv:<manifest.csv>; `fmprobe datasets` lists every source and its options.")]
BackboneOpt = Annotated[str, typer.Option("--backbone", "-b", help="Backbone name (`fmprobe models`), NAME:random for the random-init control, or any timm model name.")]
WeightsOpt = Annotated[Optional[Path], typer.Option("--weights", help="Local checkpoint (safetensors or a torch state dict) instead of the hub.")]
ResolutionOpt = Annotated[Optional[int], typer.Option("--resolution", help="Input size in pixels (default: the backbone's native size).")]
ReadoutsOpt = Annotated[Optional[str], typer.Option("--readouts", help="Comma-separated readouts (default: the backbone's).")]
# A string, not an enum, so that cuda:N passes; the library checks it (runtime.check_device_name) before any work.
DeviceOpt = Annotated[Optional[str], typer.Option("--device", metavar=f"[{'|'.join(d.value for d in fmprobe.Device)}|cuda:N]", help="Where the network runs (default: auto; under torchrun each rank takes its local GPU).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Recompute even if the cache has this result.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Only the result, warnings and errors: no progress, no diagnostics.")]


def _split_list(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


_EXTRACT = fmprobe.ExtractOptions()  # the library's defaults, shown in `fmprobe extract --help`


@app.command(epilog=_examples('fmprobe extract -d demo -b efficientnet_lite0_imagenet', 'fmprobe extract -d csv:labels.csv -b dinov2_vitb14 --shard $SLURM_ARRAY_TASK_ID/8'))
def extract(
    dataset: DatasetOpt,
    backbone: BackboneOpt,
    weights: WeightsOpt = None,
    resolution: ResolutionOpt = None,
    readouts: ReadoutsOpt = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help=f"Images per forward pass (default: {_EXTRACT.batch_size}).")] = None,
    device: DeviceOpt = None,
    dtype: Annotated[Optional[fmprobe.ComputeDtype], typer.Option("--dtype", help=f"Compute dtype; auto: bf16 where the hardware runs it natively (default: {_EXTRACT.dtype}).")] = None,
    feature_dtype: Annotated[Optional[fmprobe.FeatureDtype], typer.Option("--feature-dtype", help=f"Storage dtype (default: {_EXTRACT.feature_dtype}).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help=f"Cache folder for feature files (default: {_EXTRACT.out}).")] = None,
    on_error: Annotated[Optional[fmprobe.OnError], typer.Option("--on-error", help=f"fail: stop at the first bad image; skip: record it and go on (default: {_EXTRACT.on_error}).")] = None,
    force: ForceOpt = False,
    workers: Annotated[Optional[int], typer.Option("--workers", help="Image-decoding processes (default: cores - 1, at most 4).")] = None,
    max_images: Annotated[Optional[int], typer.Option("--max-images", help="Use a seeded subset of at most N images per split (a quick look).")] = None,
    shard: Annotated[Optional[str], typer.Option("--shard", help="Extract only shard I/N (job arrays); the last shard to finish merges.")] = None,
    distributed: Annotated[bool, typer.Option("--distributed", help="Under torchrun: one shard per rank, rank 0 merges (detected automatically).")] = False,
    pixel_cache: Annotated[bool, typer.Option("--pixel-cache", help="Keep decoded, resized images (uint8) so later backbones with the same input geometry skip decoding.")] = False,
    decode: Annotated[Optional[str], typer.Option("--decode", help="JPEG decoding: auto (at the reduced size the resize allows; recorded in the cache key) or full.")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Run a frozen backbone once over a dataset and cache the embeddings (prints the cache file's path)."""
    chosen = dict(
        weights=weights, resolution=resolution, readouts=_split_list(readouts), batch_size=batch_size, device=device,
        dtype=dtype, feature_dtype=feature_dtype, out=out, on_error=on_error, workers=workers,
        max_images=max_images, shard=shard, decode=decode,
    )  # fmt: skip
    given = {name: value for name, value in chosen.items() if value is not None}  # None: the library's default
    fmprobe.ExtractOptions(**given)  # bad values refused here, light
    _check_inputs(dataset, backbone, {"--weights": weights})
    result = fmprobe.extract_features(
        dataset,
        backbone,
        **given,
        force=force,
        distributed=True if distributed else None,
        pixel_cache=pixel_cache,
        progress=not quiet,
    )
    _say(str(result.path))


def _check_inputs(dataset: str, backbone: str, files: dict[str, Path | None]) -> None:
    """The dataset spec, the file options and the backbone name, refused in a second, before torch loads (the
    backbone last: until the torch-free catalog exists its check imports torch)."""
    checks.check_dataset(dataset)
    for option, path in files.items():
        checks.check_file(path, option)
    checks.check_backbone(backbone)


@app.command(epilog=_examples('fmprobe merge features/demo/efficientnet_lite0_imagenet-224.h5'))
def merge(
    cache: Annotated[Path, typer.Argument(help="The cache file the shards write (printed by `fmprobe extract --shard`).")],
) -> None:
    """Assemble a sharded extraction's part files into the one cache file (refuses while a part is incomplete)."""
    _say(str(fmprobe.merge_shards(cache)))


@app.command()
def export(
    features: Annotated[Path, typer.Argument(help="A feature file written by `fmprobe extract`.")],
    format: Annotated[str, typer.Option("--format", help="parquet (one row per sample) or npz (one array per split and field).")] = "parquet",
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="File to write (default: the feature file with the format's suffix).")] = None,
) -> None:
    """Write a feature file's features, labels, ids and metadata for other tools (prints the written path).

    Example: fmprobe export features/demo/demo__resnet50__1a2b.h5 --format parquet
    """
    typer.echo(str(fmprobe.export_features(features, format, out)))  # type: ignore[arg-type]


@app.command()
def models(
    pattern: Annotated[Optional[str], typer.Argument(help="Glob over names and aliases, like timm.list_models ('*dino*'); a registered name or alias shows its details.")] = None,
    family: Annotated[Optional[str], typer.Option("--family", help="Only this family (dinov2, sam, openclip, timm, ...).")] = None,
    available: Annotated[bool, typer.Option("--available", help="Say which weights are on this machine (weights folders, torch hub and Hugging Face caches): what runs offline.")] = False,
    weights: Annotated[Optional[list[Path]], typer.Option("--weights", help="A folder of weights files to search too (repeatable; FMPROBE_WEIGHTS names more).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Every field of every row as JSON.")] = False,
) -> None:
    """List the registered backbones, read from the catalog (no model is built; any timm model name works too).

    Examples: fmprobe models '*dino*' --available; fmprobe models sam_vitb; fmprobe models --family openclip --json
    """
    rows = fmprobe.list_models(pattern, family, available=available, weights_dirs=tuple(weights or ()))
    if as_json:
        import json

        typer.echo(json.dumps(rows, indent=1))
    elif len(rows) == 1 and pattern in (rows[0]["name"], *rows[0]["aliases"]):  # type: ignore[misc]
        _model_details(rows[0])
    else:
        _models_table(rows, available)


MODELS_WIDTH = 120  # the table fits a 120-column terminal; --json and `fmprobe models NAME` have the rest


def _models_table(rows: list[dict[str, object]], available: bool) -> None:
    """name, family, params, resolution, readouts (default starred) = width, licence[, local]: at most 120 columns,
    the readouts column shortened with '…' where it has to be."""
    headers = ["name", "family", "M params", "res", "readouts (* default) = dim", "licence"] + (["local"] if available else [])
    keys = ["name", "family", "params_m", "resolution", "readouts", "license"]
    table = [[("" if r[k] is None else str(r[k]).replace(", ", " ")) for k in keys] + (["yes" if r.get("available") else "-"] if available else []) for r in rows]
    widths = [max(len(h), *(len(row[i]) for row in table)) if table else len(h) for i, h in enumerate(headers)]
    widths[4] = max(len(headers[4]), widths[4] - max(0, sum(widths) + 2 * (len(widths) - 1) - MODELS_WIDTH))
    for row in [headers, *table]:
        cells = [v if len(v) <= w else v[: w - 1] + "…" for v, w in zip(row, widths)]
        typer.echo("  ".join(v.ljust(w) for v, w in zip(cells, widths)).rstrip())
    if not rows:
        typer.echo("no registered backbone matches; any timm model name, timm:NAME, hf-hub:ORG/REPO, openclip:MODEL:TAG or hf:ORG/REPO also works.")
        return
    typer.echo("\nAlso: any timm model name (timm:NAME), hf-hub:ORG/REPO, openclip:MODEL:TAG, hf:ORG/REPO; NAME:random is the random-init")
    typer.echo("control. `fmprobe models NAME` shows aliases, weights and how to download them; --json every field.")


def _model_details(row: dict[str, object]) -> None:
    """One entry, every field, one per line (what the table leaves out)."""
    fields = ["name", "family", "implementation", "aliases", "description", "paper", "params_m", "resolution", "readouts", "weights", "license", "available", "download"]
    for key in fields:
        if key not in row:
            continue
        value = row[key]
        if isinstance(value, list):
            value = "\n".join(["", *(f"    {v}" for v in value)]) if key == "download" else ", ".join(map(str, value))
        if key == "available":
            value = value or "not on this machine (see download)"
        typer.echo(f"{key + ':':<15} {value}")


PROBE_DEFAULTS = fmprobe.ProbeGrid.defaults()  # the library's defaults, shown in `fmprobe probe --help` (read light)


@app.command(epilog=_examples('fmprobe datasets'))
def datasets() -> None:
    """List the dataset sources: spec form, example, description, and each source's ?key=value options."""
    rows = fmprobe.describe_sources()
    _table(
        ["source", "path", "example", "description"],
        [[str(r["name"]), "yes" if r["takes_path"] else "-", str(r["example"]), str(r["description"])] for r in rows],
    )
    options = [
        [str(r["name"]), f"{o['name']}={o['values']}", _option_default(o["default"]), str(o["help"])]
        for r in rows
        for o in r["options"]  # type: ignore[attr-defined]
    ]
    typer.echo("\nOptions follow the spec after '?', joined by '&' (csv:labels.csv?task=ordinal&seed=1):")
    _table(["source", "option", "default", "meaning"], options)


def _option_default(value: object) -> str:
    """A default as it would be written in a spec (``frontal=0``); ``-`` when the source decides."""
    return "-" if value is None else str(int(value)) if isinstance(value, bool) else str(value)


def _table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    for row in [headers, *rows]:
        typer.echo("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())


@app.command(epilog=_examples('fmprobe probe features/ -o results', 'fmprobe probe features/ --probes logreg,knn --train-fractions 0.01,0.1,1 --repeats 5'))
def probe(
    features: Annotated[list[Path], typer.Argument(help="Feature files (.h5) or folders of them.")],
    probe: Annotated[Optional[str], typer.Option("--probes", help=f"Comma-separated probes (default: {','.join(PROBE_DEFAULTS['probes'])}).")] = None,
    readout: Annotated[Optional[str], typer.Option("--readouts", help="Comma-separated readouts (default: all stored).")] = None,
    train_fraction: Annotated[Optional[str], typer.Option("--train-fractions", help=f"Comma-separated label fractions, e.g. 0.01,0.1,1.0 (default: {','.join(f'{f:g}' for f in PROBE_DEFAULTS['train_fractions'])}).")] = None,
    shots: Annotated[Optional[str], typer.Option("--shots", help=f"Comma-separated labelled images per class for few-shot cells, next to the fractions, e.g. 1,2,4,8,16 (one per patient where the split records groups; default: {','.join(map(str, PROBE_DEFAULTS['shots'])) or 'none'}).")] = None,
    repeats: Annotated[Optional[int], typer.Option("--repeats", help=f"Repeats (seeds and subsamples) for fractions < 1, shots and stochastic probes (default: {PROBE_DEFAULTS['repeats']}).")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help=f"Base seed (default: {PROBE_DEFAULTS['seed']}).")] = None,
    bootstrap: Annotated[Optional[int], typer.Option("--bootstrap", help=f"Bootstrap resamples per confidence interval (default: {PROBE_DEFAULTS['n_bootstrap']}).")] = None,
    val_subsample: Annotated[Optional[fmprobe.probing.ValSubsample], typer.Option("--val-subsample", help=f"Validation rows that choose a fraction cell's hyper-parameters: proportional (a stratified subsample of the same fraction) or full (default: {PROBE_DEFAULTS['val_subsample'].value}).")] = None,
    subgroups: Annotated[Optional[str], typer.Option("--subgroups", help="Comma-separated test-metadata attributes to score every cell on per value, e.g. sex,age_band,site (the same fit; worst group and gap per attribute; default: none).")] = None,
    subgroup_min_size: Annotated[Optional[int], typer.Option("--subgroup-min-size", help=f"Test rows a subgroup needs for a number; smaller ones are reported as too small (default: {PROBE_DEFAULTS['subgroup_min_size']}).")] = None,
    bands: Annotated[Optional[list[str]], typer.Option("--bands", metavar="KEY=EDGES", help=f"Edges of a derived <key>_band subgroup, KEY=EDGES, once per key, e.g. --bands age=40,60,80 (default: {'; '.join(f'{k}=' + ','.join(f'{e:g}' for e in v) for k, v in fmprobe.probing.DEFAULT_BANDS.items())}).")] = None,
    probe_param: Annotated[Optional[list[str]], typer.Option("--probe-param", help=f"Set a probe parameter, {fmprobe.probing.grid.PROBE_PARAM_FORM} (repeatable; checked against the probe's constraints before any work).")] = None,
    out: Annotated[Path, typer.Option("--out", help="Results folder (results.csv, results.parquet, predictions/).")] = Path("results"),
    shard: Annotated[Optional[str], typer.Option("--shard", help="Run only shard I/N of the cells (dealt by cell id; N processes may share one --out, e.g. a job array).")] = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Fit probes on cached features (hyper-parameters on validation only) and append result rows."""
    try:
        fractions = [float(f) for f in _split_list(train_fraction) or []] or None
    except ValueError:
        raise FmprobeError(f"--train-fractions {train_fraction!r}: give numbers such as 0.01,0.1,1.0.") from None
    try:
        shot_values = [int(k) for k in _split_list(shots) or []] or None
    except ValueError:
        raise FmprobeError(f"--shots {shots!r}: give whole numbers of images per class, such as 1,2,4,8,16.") from None
    run = fmprobe.probe_features(
        features,
        probes=_split_list(probe),
        readouts=_split_list(readout),
        train_fractions=fractions,
        shots=shot_values,
        repeats=repeats,
        seed=seed,
        n_bootstrap=bootstrap,
        val_subsample=val_subsample,
        subgroups=_split_list(subgroups),
        subgroup_min_size=subgroup_min_size,
        bands=fmprobe.probing.parse_bands(bands) if bands else None,
        probe_params=probe_param,
        out=out, shard=shard,
        force=force,
        progress=not quiet,
    )
    _say(f"{run.cells_run} cells run, {run.cells_skipped} already done; results in {run.results_dir}")
    _echo_recommendation(run.results_dir)


def _echo_recommendation(results: Path, baseline: str | None = None) -> None:
    """The recommendation's sentences after a run (stdout); when the results cannot support one yet (a single
    model, rows to reconcile first), say why on stderr: the run itself succeeded."""
    try:
        _say("\n".join(fmprobe.recommend(results, baseline=baseline).sentences))
    except FmprobeError as err:
        typer.echo(f"no recommendation yet: {err}", err=True)


_REPORT_DEFAULTS = fmprobe.ReportOptions.defaults()  # the report's defaults, declared once in fmprobe.report


@app.command(epilog=_examples('fmprobe report results -o report'))
def report(
    results: Annotated[list[Path], typer.Argument(help="Results folder(s) or results.csv/.parquet files.")],
    baseline: Annotated[Optional[str], typer.Option("--baseline", help="Reference backbone for the gain view (default: an ImageNet one).")] = None,
    out: Annotated[Path, typer.Option("--out", help="Report folder.")] = Path("report"),
    bootstrap: Annotated[Optional[int], typer.Option("--bootstrap", help=f"Resamples of the paired bootstrap behind the gains (default: {_REPORT_DEFAULTS['n_bootstrap']}).")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help=f"Seed of those resamples (default: {_REPORT_DEFAULTS['seed']}).")] = None,
    allow_different_test_sets: Annotated[Optional[bool], typer.Option("--allow-different-test-sets", help="Compare rows of a dataset scored on different test sets, on the test ids they share (the report says so); refused without it.", show_default=str(_REPORT_DEFAULTS["allow_different_test_sets"]))] = None,
    alpha: Annotated[Optional[float], typer.Option("--alpha", help=f"Significance level of the recommendation's Holm-corrected paired comparisons (default: {_REPORT_DEFAULTS['alpha']}).")] = None,
    reference: Annotated[Optional[Path], typer.Option("--reference", help="CSV of published numbers (columns dataset, method, metric, value, source) shown beside ours, marked as not measured here (default: none).")] = None,
) -> None:
    """Write report.md, a self-contained report.html, the PNG plots and every table as CSV and LaTeX from a results table."""
    given = {"n_bootstrap": bootstrap, "seed": seed, "allow_different_test_sets": allow_different_test_sets, "alpha": alpha, "reference": reference}
    given = {k: v for k, v in given.items() if v is not None}  # else the library's
    paths = fmprobe.write_report([str(r) for r in results] if len(results) > 1 else results[0], out, baseline=baseline, **given)
    _say(f"{paths.html}\n{paths.markdown}")


_RECOMMEND_DEFAULTS = fmprobe.RecommendOptions.defaults()  # light: the recommendation's alpha, declared once
# Declared once, for `leaderboard` (and for `report` and `probe` to share when their owners fold them in).
ResultsArg = Annotated[list[Path], typer.Argument(help="Results folder(s) or results.csv/.parquet files.")]
AlphaOpt = Annotated[Optional[float], typer.Option("--alpha", help=f"Significance level of the Holm-corrected paired comparisons (default: {_RECOMMEND_DEFAULTS['alpha']}).")]
CompareWithOpt = Annotated[Optional[str], typer.Option("--baseline", help="Model to compare against (default: the one the registry flags as an ImageNet baseline).")]
PairedResamplesOpt = Annotated[Optional[int], typer.Option("--bootstrap", help=f"Resamples of each paired bootstrap (default: {_REPORT_DEFAULTS['n_bootstrap']}, seed {_REPORT_DEFAULTS['seed']}, as in the report).")]


@app.command(epilog=_examples('fmprobe leaderboard results --baseline efficientnet_lite0_imagenet'))
def leaderboard(results: ResultsArg, alpha: AlphaOpt = None, baseline: CompareWithOpt = None, bootstrap: PairedResamplesOpt = None) -> None:
    """Print what to use: per dataset the configuration chosen on validation, what the test set can tell it from
    (same-probe paired bootstrap, Holm-corrected), and the backbones' mean ranks across datasets."""
    given = {k: v for k, v in {"alpha": alpha, "n_bootstrap": bootstrap}.items() if v is not None}
    answer = fmprobe.recommend([str(r) for r in results] if len(results) > 1 else results[0], baseline=baseline, **given)
    _say(answer.to_text())


@app.command(epilog=_examples('fmprobe demo -o /tmp/fmprobe-demo'))
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for features/, results/ and report/.")] = Path("."),
    images_per_class: Annotated[Optional[int], typer.Option("--images-per-class", help="Size of the synthetic demo data (default: the shipped demo study's).")] = None,
    quiet: QuietOpt = False,
) -> None:
    """The whole loop offline on built-in synthetic data: extract (EfficientNet-Lite0 and its random control),
    probe (logreg, kNN, LightGBM), report. Runs the study file shipped in the package (fmprobe/studies/demo.toml)."""
    run = fmprobe.run_demo(out, images_per_class=images_per_class, progress=not quiet)
    typer.echo(run.table)
    typer.echo("")
    _echo_recommendation(run.results_dir)
    typer.echo(f"\nreport: {run.report_html}")


@app.command()  # its example is in the docstring
def study(
    file: Annotated[Optional[Path], typer.Argument(help="Study file (TOML), e.g. studies/medmnist.toml.")] = None,
    init: Annotated[Optional[Path], typer.Option("--init", help="Write a commented study template to this path and exit.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the grid and its estimated cost, run nothing.")] = False,
    keep_going: Annotated[bool, typer.Option("--keep-going", help="Go on past a failed job; list the failures at the end (exit 1).")] = False,
    max_images: Annotated[Optional[int], typer.Option("--max-images", help="A quick look: at most N images per split.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Output folder (default: the study file's 'out').")] = None,
    shard: Annotated[Optional[str], typer.Option("--shard", help="Shard I/N of a job array sharing --out: every feature file extracted once, cells dealt by id; no report (run once more unsharded for it).")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Run a study grid: extraction (cached), probes (resumable), report.

    Example: fmprobe study --init my.toml && fmprobe study my.toml --dry-run && fmprobe study my.toml
    """
    if init is not None:
        typer.echo(str(fmprobe.init_study(init)))
        return
    if file is None:
        raise FmprobeError("name a study file (fmprobe study FILE.toml), or write one with `fmprobe study --init FILE.toml`.")
    run = fmprobe.run_study(file, out=out, dry_run=dry_run, max_images=max_images, progress=not quiet, keep_going=keep_going,
                             shard=shard)
    if run.missing:
        typer.echo(f"fmprobe: {len(run.missing)} thing(s) this study needs are missing (listed above with their fix).", err=True)
        raise typer.Exit(1)
    if run.report is not None:
        _echo_recommendation(run.study.out / "results", run.study.baseline)
        _say(str(run.report.html))
    if run.failures:
        typer.echo(f"{len(run.failures)} job(s) failed:\n  " + "\n  ".join(run.failures), err=True)
        raise typer.Exit(1)


def _recipe_default(name: str) -> str:
    """What ``--help`` shows for a finetune option left out: the library's default (Recipe / RunOptions fields)."""
    value = {**fmprobe.RunOptions.defaults(), **fmprobe.Recipe.defaults()}[name]
    return "none" if value is None else str(value)


@app.command(epilog=_examples('fmprobe finetune -d demo -b efficientnet_lite0_imagenet --setting linear --epochs 5'))
def finetune(
    dataset: DatasetOpt,
    backbone: BackboneOpt,
    setting: Annotated[Optional[str], typer.Option("--setting", help="linear (frozen backbone, linear head), attention (frozen backbone, attention-pooling head over patch tokens), partial:K (top K blocks trained) or full.", show_default=_recipe_default("setting"))] = None,
    weights: WeightsOpt = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Training epochs (the best validation epoch is tested).", show_default=_recipe_default("epochs"))] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="AdamW learning rate.", show_default=_recipe_default("lr"))] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Images per optimizer step (over all processes under torchrun).", show_default=_recipe_default("batch_size"))] = None,
    resolution: ResolutionOpt = None,
    weight_decay: Annotated[Optional[float], typer.Option("--weight-decay", help="AdamW weight decay.", show_default=_recipe_default("weight_decay"))] = None,
    warmup_epochs: Annotated[Optional[int], typer.Option("--warmup-epochs", help="Linear warm-up epochs (at most half the run).", show_default=_recipe_default("warmup_epochs"))] = None,
    schedule: Annotated[Optional[fmprobe.Schedule], typer.Option("--schedule", help="After warm-up: constant (the study) or cosine.", show_default=_recipe_default("schedule"))] = None,
    grad_clip: Annotated[Optional[float], typer.Option("--grad-clip", help="Gradient-norm clipping (0: off).", show_default=_recipe_default("grad_clip"))] = None,
    layer_decay: Annotated[Optional[float], typer.Option("--layer-decay", help="Layer-wise lr decay, e.g. 0.75 (ViTs).", show_default=_recipe_default("layer_decay"))] = None,
    patience: Annotated[Optional[int], typer.Option("--patience", help="Early stopping: epochs without a better validation score.", show_default=_recipe_default("patience"))] = None,
    balance: Annotated[Optional[fmprobe.Balance], typer.Option("--balance", help="Class balance: none, loss (class weights) or sampler.", show_default=_recipe_default("balance"))] = None,
    grad_checkpointing: Annotated[Optional[bool], typer.Option("--grad-checkpointing", help="Trade compute for memory when the backbone trains.", show_default=_recipe_default("grad_checkpointing"))] = None,
    head: Annotated[Optional[fmprobe.Head], typer.Option("--head", help="attention setting: small (random attention pool) or deit (DeiT-B-initialised block).", show_default=_recipe_default("head"))] = None,
    head_weights: Annotated[Optional[Path], typer.Option("--head-weights", help="DeiT-B checkpoint for --head deit (default: the published one).")] = None,
    device: DeviceOpt = None,
    dtype: Annotated[Optional[fmprobe.ComputeDtype], typer.Option("--dtype", help="Compute dtype (auto: bf16 where the hardware runs it natively).", show_default=_recipe_default("dtype"))] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed of the head, data order, augmentation and dropout.", show_default=_recipe_default("seed"))] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Run folder: rows go to OUT/results, checkpoints and logs to OUT/finetune.", show_default=_recipe_default("out"))] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", help="Image-loading processes (default: cores - 1, at most 4).")] = None,
    max_images: Annotated[Optional[int], typer.Option("--max-images", help="Use a seeded subset of at most N images per split (a quick look).")] = None,
    bootstrap: Annotated[Optional[int], typer.Option("--bootstrap", help="Bootstrap resamples per confidence interval.", show_default=_recipe_default("n_bootstrap"))] = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train a head (or the backbone too) with the study's recipe; write the same result rows as `fmprobe probe`.

    Resumable (re-run the same command) and multi-process under torchrun."""
    given = dict(
        setting=setting, epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay,
        warmup_epochs=warmup_epochs, schedule=schedule, grad_clip=grad_clip, layer_decay=layer_decay, patience=patience,
        balance=balance, grad_checkpointing=grad_checkpointing, head=head,
    )  # fmt: skip
    recipe = fmprobe.Recipe(**{k: v for k, v in given.items() if v is not None})
    run = dict(
        weights=weights, resolution=resolution, head_weights=head_weights, device=device, dtype=dtype, seed=seed,
        out=out, workers=workers, max_images=max_images, n_bootstrap=bootstrap,
    )  # fmt: skip
    options = fmprobe.RunOptions(**{k: v for k, v in run.items() if v is not None}, force=force, progress=not quiet)
    _check_inputs(dataset, backbone, {"--weights": weights, "--head-weights": head_weights})
    result = fmprobe.run_finetune(dataset, backbone, recipe, options)
    if not result.is_main:
        return
    if result.history:
        png = fmprobe.plot_training_curves(result.history, result.run_dir / "curves.png", title=f"{backbone} · {result.probe}")
        typer.echo(f"curves: {png}", err=True)
    _say(str(result.run_dir))


@app.command(epilog=_examples("fmprobe env"))
def env() -> None:
    """Print what a bug report needs: versions, CPU and bf16, device, auto's compute dtype, cache folders.

    Loads torch, to say what it sees."""
    from fmprobe.runtime import environment

    rows = environment()
    width = max(len(k) for k, _ in rows)
    _say("\n".join(f"{k.ljust(width)}  {v}" for k, v in rows))


def main() -> None:
    """Entry point: run the app, turning FmprobeError into a one-line message and exit code 1."""
    try:
        app(standalone_mode=False, prog_name="fmprobe")
    except FmprobeError as err:
        if os.environ.get("FMPROBE_TRACEBACK"):
            raise
        typer.echo(f"fmprobe: {err}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("fmprobe: interrupted; committed work is kept, re-run the same command to resume.", err=True)
        sys.exit(130)
    except (typer.Exit, typer.Abort) as stop:
        sys.exit(getattr(stop, "exit_code", 1))
    except Exception as err:  # usage errors (typer vendors click, so match by behaviour, not class)
        if callable(getattr(err, "show", None)) and isinstance(getattr(err, "exit_code", None), int):
            err.show()
            sys.exit(err.exit_code)
        raise


if __name__ == "__main__":
    main()
