"""Safe checkpoint loading: safetensors or ``torch.load(weights_only=True)``, strict loads, named mismatches.

Never unpickle arbitrary objects (a checkpoint is code otherwise), never ``strict=False`` (it silently drops
the weights you meant to evaluate).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
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


def downloads_disabled() -> bool:
    """No network fetches: HF_HUB_OFFLINE=1 (also honoured for non-Hugging-Face URLs) or FMPROBE_OFFLINE=1."""
    return hub_offline() or os.environ.get("FMPROBE_OFFLINE", "0").lower() in ("1", "true", "yes")


def torch_hub_file(filename: str) -> Path:
    """Where ``torch.hub.load_state_dict_from_url`` keeps a downloaded checkpoint."""
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def locate_published(
    backbone: str,
    urls: tuple[str, ...] = (),
    hf: tuple[tuple[str, str], ...] = (),
    note: str = "",
) -> Path:
    """The first local copy of a checkpoint among its published locations, else a download (online), else a
    WeightsError naming the file, where it is published and ``--weights``.

    ``urls`` are the authors' direct links (cached in the torch hub checkpoint folder, as torch.hub does);
    ``hf`` are ``(repo_id, filename)`` pairs on the Hugging Face Hub (looked up in the local HF cache).
    """
    from huggingface_hub import hf_hub_download

    for url in urls:
        cached = torch_hub_file(url.rsplit("/", 1)[-1])
        if cached.is_file():
            return cached
    for repo_id, filename in hf:
        try:
            return Path(hf_hub_download(repo_id, filename, local_files_only=True))
        except Exception:  # not in the cache (the hub library raises several error types)
            pass
    reason = "hub unreachable, HF_HUB_OFFLINE=1" if hub_offline() else "downloads disabled, FMPROBE_OFFLINE=1"
    if not downloads_disabled():
        errors = []
        for url in urls:
            target = torch_hub_file(url.rsplit("/", 1)[-1])
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                torch.hub.download_url_to_file(url, str(target), progress=True)
                return target
            except Exception as err:  # network errors come in many types
                errors.append(f"{url}: {type(err).__name__}")
        for repo_id, filename in hf:
            try:
                return Path(hf_hub_download(repo_id, filename))
            except Exception as err:
                errors.append(f"{repo_id}/{filename}: {type(err).__name__}")
        reason = "download failed: " + "; ".join(errors) if errors else reason
    places = [f"{u.rsplit('/', 1)[-1]} from {u}" for u in urls]
    places += [f"{f} from https://huggingface.co/{r}" for r, f in hf]
    raise WeightsError(
        f"no weights for {backbone!r} ({reason}). Download {' or '.join(places) or 'its checkpoint'} and pass "
        f"--weights PATH{', or put it in the local Hugging Face cache (HF_HOME)' if hf else ''}"
        f"{'; ' + note if note else ''}. Use {backbone}:random for a randomly initialised control."
    )


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
    raise WeightsError(f"unexpected key {shown_prefix}{key} in {where}; is it a checkpoint of this model?")
