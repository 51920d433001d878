"""Before a study runs: is every dataset readable and every weight file on this machine (offline)?

``fmprobe study --dry-run`` lists what is missing with its fix, and a real run refuses up front (or, with
``--keep-going``, says it once and goes on), so an hour's job does not stop at its fifth backbone. Nothing is
downloaded here: a checkpoint counts only when a run could load it offline.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from fmprobe.errors import FmprobeError


@dataclass(frozen=True)
class Missing:
    """One thing a run needs that is not here: what, why, and how to fix it (``str()`` says all three).

    Attributes
    ----------
    what : str
        The missing thing (``dataset SPEC``, ``weights of NAME``).
    why : str
        What is wrong with it.
    fix : str
        What to do.

    Examples
    --------
    >>> from fmprobe.preflight import Missing
    >>> str(Missing("weights of dinov2_vitb14", "no local checkpoint.", "download it."))
    'weights of dinov2_vitb14: no local checkpoint. Fix: download it.'
    """

    what: str
    why: str
    fix: str

    def __str__(self) -> str:
        return f"{self.what}: {self.why} Fix: {self.fix}"


def check_datasets(datasets: Iterable[str], max_images: int | None = None) -> list[Missing]:
    """Each dataset spec that cannot be read, or whose listed image files are absent (offline, nothing decoded).

    Parameters
    ----------
    datasets : iterable of str
        Dataset specs (repeats are checked once).
    max_images : int or None, optional
        Check only the seeded subset a run with ``max_images`` would read.

    Returns
    -------
    list of Missing
        One entry per unreadable dataset; empty when every one is here.

    Examples
    --------
    >>> from fmprobe.preflight import check_datasets
    >>> [str(m) for m in check_datasets(["demo", "csv:no/such/labels.csv"])]  # doctest: +SKIP
    ["dataset csv:no/such/labels.csv: ... Fix: fix the path or the spec in the study's 'datasets'."]
    """
    from fmprobe.datasets import load_dataset
    from fmprobe.datasets.base import FileSource

    missing = []
    for spec in dict.fromkeys(datasets):
        try:
            data = load_dataset(spec, max_images)
        except FmprobeError as err:
            missing.append(Missing(f"dataset {spec}", _first_line(err), "fix the path or the spec in the study's 'datasets'."))
            continue
        absent = [p for s in data.splits.values() if isinstance(s.source, FileSource) for p in s.source.paths if not p.exists()]
        if absent:
            missing.append(
                Missing(f"dataset {spec}", f"{len(absent)} listed image file(s) are absent, e.g. {absent[0]}.",
                        "restore them, fix the listing, or set on_error = \"skip\" under [extract].")
            )  # fmt: skip
    return missing


def check_weights(backbones: Iterable[str], weights: Mapping[str, str], study: Path | None = None) -> list[Missing]:
    """Each pretrained backbone whose checkpoint a run could not load offline (random controls need none).

    Nothing is downloaded: a published checkpoint counts only when it is already in the local cache.

    Parameters
    ----------
    backbones : iterable of str
        Backbone names as a study lists them (``NAME:random`` needs no weights).
    weights : Mapping of str to str
        Backbone name -> local checkpoint path (a study's ``[weights]`` table, or ``--weights``).
    study : Path or None, optional
        The study file, named in the fixes (None: the fixes point to ``--weights``).

    Returns
    -------
    list of Missing
        One entry per backbone whose checkpoint is absent; empty when every one is here.

    Examples
    --------
    >>> from fmprobe.preflight import check_weights
    >>> check_weights(["efficientnet_lite0_imagenet:random"], {})
    []
    >>> check_weights(["dinov2_vitb14"], {"dinov2_vitb14": "no/such.pth"})  # doctest: +SKIP
    [Missing(what='weights of dinov2_vitb14', why='no/such.pth does not exist.', fix='correct its path with --weights.')]
    """
    from fmprobe.backbones import get_spec, parse_backbone

    where = f"under [weights] in {study}" if study is not None else "with --weights"
    missing = []
    for name in dict.fromkeys(backbones):
        parsed = parse_backbone(name)
        if parsed.random_init:
            continue
        given = weights.get(parsed.base)
        if given is not None:
            if not Path(given).is_file():
                missing.append(Missing(f"weights of {parsed.base}", f"{given} does not exist.", f"correct its path {where}."))
            continue
        problem = _offline_problem(get_spec(parsed.base).weights, parsed.base)
        if problem:
            missing.append(Missing(f"weights of {parsed.base}", problem, f"download it, or give a local file {where}: {parsed.base} = \"PATH\"."))
    return missing


def _offline_problem(info: object, backbone: str) -> str | None:
    """Why ``backbone``'s published checkpoint cannot be loaded without a download (None: it can)."""
    from fmprobe.backbones.weights import locate_weights
    from fmprobe.errors import WeightsError

    with _downloads_disabled():
        try:
            locate_weights(info, backbone)  # type: ignore[arg-type]
        except WeightsError as err:
            return _first_line(err)
    return None


@contextlib.contextmanager
def _downloads_disabled() -> Iterator[None]:
    """``FMPROBE_OFFLINE=1`` for the duration of a check: locating a file must never start a download."""
    before = os.environ.get("FMPROBE_OFFLINE")
    os.environ["FMPROBE_OFFLINE"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("FMPROBE_OFFLINE", None)
        else:
            os.environ["FMPROBE_OFFLINE"] = before


def _first_line(err: Exception) -> str:
    return str(err).splitlines()[0]
