"""Datasets by spec string: ``source:argument?key=value&...`` (``medmnist:breastmnist@224``,
``csv:labels.csv?task=ordinal&seed=1``, ``demo``), or a bare ``.npz``/``.csv`` path.

A source is one file (its loader and its :class:`DatasetSource` record) plus one ``SOURCES.add`` line below.
``describe_sources()`` and ``fmprobe datasets`` list them with their options.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from fmprobe._io import accepts_renamed
from fmprobe.datasets import aptos2019, cbis_ddsm, chexpert, demo, folder, hf, imagefolder, isic2019, manifest, medmnist
from fmprobe.datasets.base import DEFAULT_IMAGE_CONVERSION, Dataset, Split, digest_parts, subset_split
from fmprobe.datasets.sources import SOURCES, DatasetSource, OptionSpec, variant_label
from fmprobe.datasets.splits import resolved
from fmprobe.tasks import PRIMARY_METRIC, SPLIT_NAMES, TASK_TYPES, TaskType  # re-exported for older imports

__all__ = [
    "PRIMARY_METRIC", "SPLIT_NAMES", "TASK_TYPES", "DEFAULT_IMAGE_CONVERSION", "Dataset", "DatasetSource",
    "OptionSpec", "SOURCES", "Split", "TaskType", "dataset_identity", "describe_sources", "load_dataset", "parse_spec", "variant_name",
]  # fmt: skip

SOURCES.add(demo.SOURCE)
SOURCES.add(medmnist.MEDMNIST)
SOURCES.add(medmnist.NPZ)
SOURCES.add(manifest.SOURCE)
SOURCES.add(folder.SOURCE)
SOURCES.add(imagefolder.SOURCE)
SOURCES.add(hf.SOURCE)
SOURCES.add(aptos2019.SOURCE)
SOURCES.add(isic2019.SOURCE)
SOURCES.add(cbis_ddsm.SOURCE)
SOURCES.add(chexpert.SOURCE)


def parse_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """Split ``source:argument?options`` into (source name, argument, raw options); see ``SOURCES.parse``."""
    return SOURCES.parse(spec)


def describe_sources() -> list[dict[str, object]]:
    """Every registered dataset source as plain data, for listings and notebooks.

    ``fmprobe datasets`` prints it; each entry is derived from the source's record, so the listing cannot drift
    from what :func:`load_dataset` accepts.

    Returns
    -------
    list of dict
        One dict per source, in registration order: ``name``, ``takes_path``, ``example`` (a spec that loads),
        ``description``, ``suffixes`` (file endings a bare path is recognised by) and ``options`` (a list of
        dicts with ``name``, ``values``, ``default`` and ``help``).

    Examples
    --------
    >>> from fmprobe import describe_sources
    >>> sources = describe_sources()
    >>> "demo" in [s["name"] for s in sources]
    True
    >>> sorted(sources[0])
    ['description', 'example', 'name', 'options', 'suffixes', 'takes_path']
    """
    return SOURCES.describe()


# The name of the one option every source takes (``load_dataset``'s argument): a subset shows it in its name.
MAX_IMAGES_OPTION = "max_images_per_split"


@accepts_renamed({"max_images_per_split": "max_images"})
def load_dataset(spec: str, max_images: int | None = None) -> Dataset:
    """Load a dataset by spec string, with its train/val/test splits, labels and per-sample metadata.

    The dataset's name says which variant it is (:func:`variant_name`): every option that changes labels,
    samples or split and differs from its default, and the subset, e.g. ``chexpert[uncertain=ignore]-3f2a9c``
    or ``demo-v2-40x4-seed0[max_images_per_split=8]``; the default variant keeps its plain name. A path source
    gets its path resolved (one location, however it is spelled) and a digest of it: see
    :func:`dataset_identity`. Two variants thus never share a features folder or a report row.

    Parameters
    ----------
    spec : str
        ``source:argument?key=value&...`` (``medmnist:breastmnist@224``, ``csv:labels.csv?task=ordinal&seed=1``,
        ``folder:images/``, ``demo``) or a bare ``.npz``/``.csv`` path; :func:`describe_sources` (or
        ``fmprobe datasets``) lists the sources and their options.
    max_images : int or None, optional
        Take a seeded subset of at most this many images from each split (quick looks); None or 0 keeps all.

    Returns
    -------
    Dataset
        The dataset: ``name`` (the variant's name, see above), ``task``, ``class_names`` and ``splits``
        (split name -> ids, labels, image source and metadata).

    Raises
    ------
    fmprobe.errors.DatasetError
        The spec, its options, or the files it names cannot be read (the message names the fix).
    fmprobe.errors.UnknownNameError
        The spec names no registered source (the message lists example specs).

    Examples
    --------
    >>> from fmprobe import load_dataset
    >>> data = load_dataset("demo", max_images=8)  # doctest: +SKIP
    >>> data.task, list(data.splits)  # doctest: +SKIP
    ('multiclass', ['train', 'val', 'test'])
    >>> load_dataset("medmnist:breastmnist@224")  # doctest: +SKIP
    """
    source, argument, options = parse_spec(spec)
    record = SOURCES.get(source)
    if record.takes_path and argument:
        argument = str(resolved(Path(argument)))
    dataset = record.load(argument, spec, options)
    values = record.read_options(spec, options)
    variant = record.variant(values)
    if max_images:
        variant[MAX_IMAGES_OPTION] = str(max_images)
        splits = {k: subset_split(v, max_images) for k, v in dataset.splits.items()}
        dataset = replace(
            dataset,
            splits=splits,
            content_digest=digest_parts(dataset.content_digest, "subset", max_images),
        )
    path = Path(argument) if record.takes_path else None
    return replace(dataset, name=variant_name(dataset.name, variant, path and (source, path, record.digest_settings(values))))


def variant_name(readable: str, variant: dict[str, str], located: tuple[str, Path, list[tuple[str, str]]] | None) -> str:
    """``readable[key=value,...]``, then ``-<digest>`` for a path dataset (``located``: source, path and the
    options the digest covers). Shown as is in results and reports; file and folder names use its
    :func:`fmprobe._io.slug` (``chexpert-uncertain-ignore-3f2a9c``), which is shell-safe."""
    name = readable + variant_label(variant)
    return name if located is None else f"{name}-{dataset_identity(*located)}"


def dataset_identity(source: str, path: Path, settings: list[tuple[str, str]]) -> str:
    """The digest that ends a path dataset's name: 6 hex digits of the source, the resolved location and the
    options' values (``DatasetSource.digest_settings``: defaults included, so default variants keep the names
    they had before variants were shown).

    Two folders both called ``images`` (``siteA/images``, ``siteB/images``) are different datasets and must not
    share a features folder or a report row; the same data reached through a relative path or a symlink
    resolves to the same place and keeps one name. Built-in names without a path (``demo``,
    ``medmnist:breastmnist``) have no digest."""
    return digest_parts(source, str(resolved(path)), settings)[:6]
