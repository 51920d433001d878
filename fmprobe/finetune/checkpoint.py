"""Checkpoints: written atomically (temp file + fsync + os.replace), read with ``torch.load(weights_only=True)``.

A checkpoint holds only tensors and plain Python values: the trained weights, optimizer, scheduler and (fp16) scaler
states, the RNG states (python, numpy, torch, the DataLoader generator: stored as tensors / lists), the next epoch,
the best-so-far score and epoch, and the training history. ``last.pt`` is rewritten after every epoch; ``best.pt``
holds the weights of the best validation epoch (what is evaluated on test).
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fmprobe._io import atomic_write
from fmprobe.finetune.recipe import FinetuneError

LAST, BEST = "last.pt", "best.pt"
FORMAT = 1


def save_atomic(obj: dict[str, Any], path: Path) -> None:
    """A kill mid-write leaves the previous checkpoint (fsynced before the rename, so a crash cannot either)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: torch.save(obj, tmp), fsync=True)


def load(path: Path) -> dict[str, Any]:
    """Load a checkpoint without unpickling code; a damaged file is an error that says how to start afresh."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        text = str(err).strip().splitlines()[0][:160] if str(err).strip() else ""
        if isinstance(err, pickle.UnpicklingError):
            text = "it holds objects other than tensors and plain values, refused by weights_only loading"
        raise FinetuneError(
            f"{path}: cannot read the checkpoint ({type(err).__name__}: {text}). Delete it or run with --force to "
            "start the run afresh."
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise FinetuneError(
            f"{path}: not a fmprobe finetune checkpoint (format {FORMAT}); use --force to start afresh."
        )
    return state


def rng_state(generator: torch.Generator | None = None) -> dict[str, Any]:
    """All RNG states as tensors and plain types (safe for weights_only loading)."""
    version, internal, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [
            np_name,
            torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            int(np_pos),
            int(np_has_gauss),
            float(np_gauss),
        ],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    if generator is not None:
        state["loader"] = generator.get_state()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(x) for x in internal), gauss))
    name, keys, pos, has_gauss, gauss_np = state["numpy"]
    np.random.set_state((str(name), keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(gauss_np)))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and "loader" in state:
        generator.set_state(state["loader"])
