"""Safe checkpoint loading: safetensors or ``torch.load(weights_only=True)``, strict loads, named mismatches.

Never unpickle arbitrary objects (a checkpoint is code otherwise), never ``strict=False`` (it silently drops
the weights you meant to evaluate).
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

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


def load_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Load every tensor or fail naming the first mismatching keys and shapes."""
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


def locate_hf_file(repo_id: str, filename: str, backbone: str, revision: str | None = None) -> Path:
    """The local path of a Hugging Face Hub file: from the local cache, else downloaded unless offline."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, local_files_only=True))
    except Exception:  # not cached (the hub library raises several error types)
        pass
    if not hub_offline():
        try:
            return Path(hf_hub_download(repo_id, filename, revision=revision))
        except Exception as err:
            reason = f"download failed: {type(err).__name__}"
        else:  # pragma: no cover - returned above
            raise AssertionError
    else:
        reason = "hub unreachable, HF_HUB_OFFLINE=1"
    raise WeightsError(
        f"no weights for {backbone!r} ({reason}). Download {filename} from https://huggingface.co/{repo_id} and pass "
        f"--weights PATH, or put it in the local Hugging Face cache (HF_HOME); use {backbone}:random for a "
        "randomly initialised control."
    )
