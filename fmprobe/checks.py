"""Checks of user input that need no heavy stack (no torch, no model, no image read), run before work starts.

A typo in a backbone name or a missing CSV should cost a second, not the ~7 s of ``import torch``: the CLI and
the study call these first, and import the stack that does the work only once they pass. Each check reads the
registries' plain data; the loaders repeat the same checks later (this module adds speed, not a second rule).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from fmprobe.errors import DatasetError, FmprobeError, WeightsError


def check_backbone(name: str) -> None:
    """Refuse an unknown backbone name with the closest known ones, from the torch-free catalog
    (:func:`fmprobe.backbones.catalog.check_backbone_name`: timm names from its snapshot, torch only where the
    installed timm differs from it or a plugin registered names at run time)."""
    from fmprobe.backbones.catalog import check_backbone_name

    check_backbone_name(name)


def check_dataset(spec: str) -> None:
    """Refuse a dataset spec whose source, options or path is wrong, without reading the data."""
    from fmprobe.datasets import SOURCES

    source, argument, options = SOURCES.parse(spec)  # unknown source: the closest ones
    record = SOURCES.get(source)
    record.read_options(spec, options)  # unknown options and bad values, by name
    if not record.takes_path:
        return
    where = f"the path after '{source}:'" if spec.strip().startswith(f"{source}:") else "the path"
    if not argument:
        raise DatasetError(f"dataset spec {spec!r}: give {where}, e.g. {record.example} ({record.description}).")
    if not Path(argument).exists():
        raise DatasetError(f"dataset spec {spec!r}: {argument}: no such file or folder{_relative(argument)}. Check {where}.")


def check_file(path: str | Path | None, option: str) -> None:
    """Refuse a file option (``--weights``, ``--head-weights``, ``--reference``) naming no file."""
    if path is None or Path(path).is_file():
        return
    kind = WeightsError if "weights" in option else FmprobeError
    what = "is a folder, not a file" if Path(path).is_dir() else "no such file"
    raise kind(f"{option} {path}: {what}{_relative(path)}. Check the path.")


def _relative(path: str | Path) -> str:
    """Where a relative path was looked for (the working directory), said in the message."""
    return "" if Path(path).is_absolute() else f" (looked for in {Path.cwd()})"


def check_probes(names: Iterable[str]) -> None:
    """Refuse unknown probe names (the probe registry: scikit-learn, no torch)."""
    from fmprobe.probes import PROBES

    for name in names:
        PROBES.get(name)


__all__ = ["check_backbone", "check_dataset", "check_file", "check_probes"]
