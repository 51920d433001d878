"""Shared helpers of the fault battery. It runs at a reduced count in CI; FMPROBE_FAULT_TRIALS=20 runs it in full."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

TRIALS = int(os.environ.get("FMPROBE_FAULT_TRIALS", "2"))
ROOT = Path(__file__).resolve().parents[2]


def arrays(path: Path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    with h5py.File(path) as h5:
        h5.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def assert_same_file(a: Path, b: Path) -> None:
    left, right = arrays(a), arrays(b)
    assert left.keys() == right.keys()
    for name in left:
        assert np.array_equal(left[name], right[name]), name


# ---- the byte-flip sweep (tests/reliability/test_flip_sweep.py) ----
HANG_S = 90  # (> the unsealed-file timeout) a trial still running after this is a hang: SIGALRM's default action ends the child process


def flip(data: bytes, offset: int, xor: int) -> bytes:
    damaged = bytearray(data)
    damaged[offset] ^= xor
    return bytes(damaged)


def snapshot(path: Path) -> dict[str, object]:
    """Everything a feature file serves (attributes, every split's arrays and skipped rows), via the public reader."""
    from fmprobe.store import FeatureFile

    f = FeatureFile(path)
    served: dict[str, object] = {"attrs": {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}}
    served["decoded"] = (f.key, f.task, f.class_names, f.readouts, f.primary_metric, f.backbone, f.resolution, f.splits)
    for split in f.splits:
        served[f"{split}/skipped"] = f.skipped(split)
        for readout in f.readouts:
            loaded = f.load(split, readout)
            served[f"{split}/{readout}"] = (loaded.features, loaded.labels, loaded.ids)
    return served


def same_served(a: dict[str, object], b: dict[str, object]) -> bool:
    if a.keys() != b.keys():
        return False
    for name in a:
        left, right = a[name], b[name]
        if isinstance(left, tuple) and left and isinstance(left[0], np.ndarray):
            if not all(np.array_equal(x, y) for x, y in zip(left, right)):  # type: ignore[arg-type]
                return False
        elif left != right:
            return False
    return True


def outcome(path: Path, reference: dict[str, object]) -> str:
    """refused (a CacheError naming the file and --force), harmless (served exactly as before), or what went wrong."""
    from fmprobe.errors import CacheError

    try:
        served = snapshot(path)
    except CacheError as err:
        return "refused" if "--force" in str(err) and path.name in str(err) else f"unnamed: {err}"
    except Exception as err:  # noqa: BLE001 - counted: the battery's "traceback" outcome
        return f"traceback: {type(err).__name__}: {err}"
    return "harmless" if same_served(served, reference) else "silent"


def sweep_worker(cache: Path, log: Path, trials: list[tuple[int, int]]) -> None:
    """Run trials ``(offset, xor)`` on copies of ``cache``, logging 'start' before and the outcome after each, so
    the parent can name the trial a crash or hang ended in."""
    import signal

    reference, data = snapshot(cache), cache.read_bytes()
    work = cache.with_name("damaged-" + cache.name)
    with log.open("a") as out:
        for offset, xor in trials:
            out.write(f"start {offset} {xor}\n")
            out.flush()
            work.write_bytes(flip(data, offset, xor))
            signal.alarm(HANG_S)
            result = outcome(work, reference)
            signal.alarm(0)
            out.write(f"done {offset} {xor} {result!r}\n")
            out.flush()


if __name__ == "__main__":  # python tests/reliability/faults.py CACHE LOG OFFSET:XOR ...
    import sys

    sweep_worker(Path(sys.argv[1]), Path(sys.argv[2]), [(int(a), int(b)) for a, b in (t.split(":") for t in sys.argv[3:])])
