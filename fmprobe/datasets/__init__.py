"""Datasets by spec string: ``medmnist:<flag>[@size]``, ``<file>.npz``, ``folder:<dir>``, ``csv:<file>``, ``demo``.

A source is one small loader function plus one registry line below. Options follow the path after ``?``
(``csv:labels.csv?task=ordinal&seed=1``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qsl

from fmprobe.datasets import aptos2019, cbis_ddsm, chexpert, isic2019
from fmprobe.datasets.base import (
    PRIMARY_METRIC,
    SPLIT_NAMES,
    TASK_TYPES,
    Dataset,
    SpecOptions,
    Split,
    TaskType,
    subset_split,
)
from fmprobe.datasets.demo import load_demo
from fmprobe.datasets.folder import load_folder
from fmprobe.datasets.manifest import load_manifest
from fmprobe.datasets.medmnist import load_medmnist, load_npz
from fmprobe.errors import DatasetError
from fmprobe.registry import Registry

__all__ = [
    "PRIMARY_METRIC", "SPLIT_NAMES", "TASK_TYPES", "Dataset", "Split", "TaskType", "SOURCES", "load_dataset",
]  # fmt: skip

Loader = Callable[[str, str, dict[str, str]], Dataset]
SOURCES: Registry[Loader] = Registry("dataset source", "Dataset specs: medmnist:<flag>[@size], <file>.npz, "
                                     "folder:<dir>, csv:<manifest.csv>, demo.")


def _options(options: dict[str, str], spec: str, allowed: tuple[str, ...]) -> dict[str, object]:
    opts = SpecOptions(spec, options, "this source", allowed)
    parsed: dict[str, object] = {}
    if "task" in options:
        parsed["task"] = opts.choice("task", TASK_TYPES, None)
    if "seed" in options:
        parsed["seed"] = opts.integer("seed", 0)
    return parsed


SOURCES.add("medmnist", lambda arg, spec, opts: load_medmnist(arg, spec))
SOURCES.add("npz", lambda arg, spec, opts: load_npz(Path(arg), spec=spec))
SOURCES.add("folder", lambda arg, spec, opts: load_folder(Path(arg), spec, **_options(opts, spec, ("task", "seed"))))
SOURCES.add("csv", lambda arg, spec, opts: load_manifest(Path(arg), spec, **_options(opts, spec, ("task", "seed"))))
SOURCES.add("demo", lambda arg, spec, opts: load_demo(arg, spec, **_options(opts, spec, ("seed",))))
SOURCES.add("aptos2019", aptos2019.from_spec)
SOURCES.add("isic2019", isic2019.from_spec)
SOURCES.add("cbis-ddsm", cbis_ddsm.from_spec)
SOURCES.add("chexpert", chexpert.from_spec)


def parse_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """Split ``source:argument?options`` into its parts; a bare ``.npz``/``.csv`` path names its source."""
    spec = spec.strip()
    if not spec:
        raise DatasetError("empty dataset spec; use e.g. demo, medmnist:pneumoniamnist or csv:path/to/manifest.csv.")
    body, _, query = spec.partition("?")
    try:
        options = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
    except ValueError:
        raise DatasetError(f"dataset spec {spec!r}: cannot read the options after '?'; write key=value&key=value.") from None
    source, sep, argument = body.partition(":")
    if sep and source in SOURCES:
        return source, argument, options
    if body == "demo":
        return "demo", "", options
    lower = body.lower()
    if lower.endswith(".npz"):
        return "npz", body, options
    if lower.endswith(".csv"):
        return "csv", body, options
    if Path(body).is_dir():  # never guess: scanning an arbitrary folder tree (".", "/") could take hours
        raise DatasetError(f"dataset spec {spec!r} is a folder; write folder:{body} for an ImageFolder layout.")
    raise SOURCES.unknown(source if sep else body)


def load_dataset(spec: str, max_images_per_split: int | None = None) -> Dataset:
    """Load a dataset by spec; ``max_images_per_split`` takes a seeded subset of each split (quick looks)."""
    source, argument, options = parse_spec(spec)
    dataset = SOURCES.get(source)(argument, spec, options)
    if max_images_per_split:
        from dataclasses import replace

        from fmprobe.datasets.base import digest_parts

        splits = {k: subset_split(v, max_images_per_split) for k, v in dataset.splits.items()}
        dataset = replace(
            dataset,
            splits=splits,
            content_digest=digest_parts(dataset.content_digest, "subset", max_images_per_split),
        )
    return dataset
