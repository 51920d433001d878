"""Datasets by spec string: ``source:argument?key=value&...`` (``medmnist:breastmnist@224``,
``csv:labels.csv?task=ordinal&seed=1``, ``demo``), or a bare ``.npz``/``.csv`` path.

A source is one file (its loader and its :class:`DatasetSource` record) plus one ``SOURCES.add`` line below.
``describe_sources()`` and ``fmprobe datasets`` list them with their options.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from fmprobe.datasets import aptos2019, cbis_ddsm, chexpert, demo, folder, isic2019, manifest, medmnist
from fmprobe.datasets.base import DEFAULT_IMAGE_CONVERSION, Dataset, Split, digest_parts, subset_split
from fmprobe.datasets.sources import SOURCES, DatasetSource, OptionSpec
from fmprobe.datasets.splits import resolved
from fmprobe.tasks import PRIMARY_METRIC, SPLIT_NAMES, TASK_TYPES, TaskType  # re-exported for older imports

__all__ = [
    "PRIMARY_METRIC", "SPLIT_NAMES", "TASK_TYPES", "DEFAULT_IMAGE_CONVERSION", "Dataset", "DatasetSource",
    "OptionSpec", "SOURCES", "Split", "TaskType", "dataset_identity", "describe_sources", "load_dataset", "parse_spec",
]  # fmt: skip

SOURCES.add(demo.SOURCE)
SOURCES.add(medmnist.MEDMNIST)
SOURCES.add(medmnist.NPZ)
SOURCES.add(manifest.SOURCE)
SOURCES.add(folder.SOURCE)
SOURCES.add(aptos2019.SOURCE)
SOURCES.add(isic2019.SOURCE)
SOURCES.add(cbis_ddsm.SOURCE)
SOURCES.add(chexpert.SOURCE)


def parse_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """Split ``source:argument?options`` into (source name, argument, raw options); see ``SOURCES.parse``."""
    return SOURCES.parse(spec)


def describe_sources() -> list[dict[str, object]]:
    """Every registered source as plain data: name, takes_path, example, description, suffixes and its options
    (name, values, default, help). ``fmprobe datasets`` prints it."""
    return SOURCES.describe()


def load_dataset(spec: str, max_images_per_split: int | None = None) -> Dataset:
    """Load a dataset by spec; ``max_images_per_split`` takes a seeded subset of each split (quick looks).

    A path source gets its path resolved (one location, however it is spelled) and names the dataset by it:
    see :func:`dataset_identity`."""
    source, argument, options = parse_spec(spec)
    record = SOURCES.get(source)
    if record.takes_path and argument:
        argument = str(resolved(Path(argument)))
    dataset = record.load(argument, spec, options)
    if record.takes_path:
        parsed = record.read_options(spec, options)
        own = {o.name: parsed[o.name] for o in record.options}  # the source's own options: they shape the data
        dataset = replace(dataset, name=dataset_identity(dataset.name, source, Path(argument), own))
    if max_images_per_split:
        splits = {k: subset_split(v, max_images_per_split) for k, v in dataset.splits.items()}
        dataset = replace(
            dataset,
            splits=splits,
            content_digest=digest_parts(dataset.content_digest, "subset", max_images_per_split),
        )
    return dataset


def dataset_identity(readable: str, source: str, path: Path, options: dict[str, object]) -> str:
    """The name of a path-based dataset: its readable name plus a short digest of the source, the resolved
    location and every option's value (defaults included), e.g. ``images-3f2a9c``.

    Two folders both called ``images`` (``siteA/images``, ``siteB/images``) are different datasets and must not
    share a features folder or a report row; the same data reached through a relative path or a symlink
    resolves to the same place and keeps one name. Built-in names without a path (``demo``,
    ``medmnist:breastmnist``) keep theirs."""
    settings = sorted((name, str(value)) for name, value in options.items())
    return f"{readable}-{digest_parts(source, str(resolved(path)), settings)[:6]}"
