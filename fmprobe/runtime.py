"""Run-time choices of extraction (and the device and compute dtype fine-tuning shares), written once.

bf16 autocast is 1.6-3x faster than fp32 on CPUs with native bf16 (avx512_bf16 / AMX) and about 4x slower on
AVX2-only CPUs, so it is never assumed: ``auto`` checks the CPU flags, the user can force either, and the
dtype actually used goes into the cache fingerprint (bf16 and fp32 features differ).

The choice vocabularies (:class:`Device`, :class:`ComputeDtype`, :class:`OnError`, :class:`FeatureDtype`) and
:class:`ExtractOptions` (extraction's defaults, read by the signature, the CLI's help and the study) import no
torch, so options are checked in a second, before the heavy stack loads; torch is imported where a device or an
autocast context is actually made.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum, StrEnum
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar

from fmprobe._io import accepts_renamed
from fmprobe.errors import FmprobeError

if TYPE_CHECKING:  # pragma: no cover
    import torch

DtypeName = Literal["fp32", "bf16", "fp16"]


class Device(StrEnum):
    """Where the network runs (``--device``); a plain string ``cuda:N`` picks GPU N.

    Every device option accepts these members or their plain strings, checked before torch loads, so a typo fails
    in a second rather than after the model is built.

    Attributes
    ----------
    auto
        The first CUDA GPU where torch sees one (under torchrun: the rank's ``LOCAL_RANK``), else the CPU.
    cpu
        The CPU, even where a GPU is present.
    cuda
        The first CUDA GPU (the rank's under torchrun); refused where CUDA is not available.

    Examples
    --------
    >>> from fmprobe import Device, ExtractOptions
    >>> Device("cpu") is Device.cpu
    True
    >>> ExtractOptions(device=Device.cpu).device, ExtractOptions(device="cuda:1").device
    ('cpu', 'cuda:1')
    """

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class ComputeDtype(StrEnum):
    """The autocast dtype of the forward pass (``--dtype``).

    bf16 is 1.6-3x faster than fp32 on CPUs with native bf16 and about 4x slower on AVX2-only ones, so ``auto``
    decides per machine; the dtype actually used enters the feature cache key (bf16 and fp32 features differ).
    ``FMPROBE_DTYPE`` sets what ``auto`` means for a whole session.

    Attributes
    ----------
    auto
        bf16 on GPUs that support it (else fp16); on CPUs with native bf16 the faster of bf16 and fp32, timed once
        per machine, backbone and resolution; fp32 elsewhere.
    fp32
        No autocast: full precision.
    bf16
        bfloat16 autocast.
    fp16
        float16 autocast (GPUs only: refused on the CPU).

    Examples
    --------
    >>> from fmprobe import ComputeDtype, ExtractOptions
    >>> [d.value for d in ComputeDtype]
    ['auto', 'fp32', 'bf16', 'fp16']
    >>> ExtractOptions(dtype=ComputeDtype.fp32).dtype
    'fp32'
    """

    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class Decode(StrEnum):
    """How JPEG files are decoded: auto at the reduced size the resize allows (``Image.draft``, recorded in the
    fingerprint), full always at full size (the keys of files extracted before reduced decoding existed)."""

    auto = "auto"
    full = "full"


class OnError(StrEnum):
    """What extraction does with an image that cannot be read (``--on-error``).

    A damaged file in a large dataset should not silently shrink the test set, so the default stops; ``skip`` is
    the explicit choice to go on, and the feature file records every skipped image and why.

    Attributes
    ----------
    fail
        Stop at the first unreadable image, naming it (the batches extracted before it are kept for a resume).
    skip
        Record the image as skipped (its id and the reason) and go on.

    Examples
    --------
    >>> from fmprobe import ExtractOptions, OnError
    >>> ExtractOptions(on_error=OnError.skip).on_error
    'skip'
    >>> ExtractOptions(on_error="ignore")
    Traceback (most recent call last):
    ...
    fmprobe.errors.FmprobeError: --on-error 'ignore': use fail or skip.
    """

    fail = "fail"
    skip = "skip"


class FeatureDtype(StrEnum):
    """How embeddings are stored in the feature file (``--feature-dtype``).

    float16 halves the file (and the memory a probe loads); float32 keeps features whose values float16 would
    round or cannot hold. The storage dtype enters the cache key, so the two never mix.

    Attributes
    ----------
    float16
        Half precision (the default).
    float32
        Single precision.

    Examples
    --------
    >>> from fmprobe import ExtractOptions, FeatureDtype
    >>> ExtractOptions().feature_dtype, ExtractOptions(feature_dtype=FeatureDtype.float32).feature_dtype
    ('float16', 'float32')
    """

    float16 = "float16"
    float32 = "float32"


DTYPE_CHOICES = tuple(d.value for d in ComputeDtype)
E = TypeVar("E", bound=Enum)


def choice(kind: type[E], value: object, option: str, hint: str) -> str:
    """``value`` (a plain string or a member of ``kind``) as the plain string, or the error that names the option."""
    text = value.value if isinstance(value, kind) else value
    if text not in {m.value for m in kind}:
        raise FmprobeError(f"{option} {text!r}: {hint}")
    return str(text)


def check_device_name(requested: object) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` as a plain string (no torch needed to say a name is wrong)."""
    text = str(requested.value if isinstance(requested, Device) else requested)
    if text not in {d.value for d in Device} and not text.startswith("cuda:"):
        raise FmprobeError(f"--device {text!r}: use auto, cpu, cuda or cuda:N.")
    return text


# ExtractOptions' deprecated keyword names (old -> new): the names now match the CLI's --workers and --max-images.
EXTRACT_RENAMED = {"num_workers": "workers", "max_images_per_split": "max_images"}


@accepts_renamed(EXTRACT_RENAMED)
@dataclass(frozen=True)
class ExtractOptions:
    """Every keyword of :func:`fmprobe.extract_features` besides dataset and backbone, with its default.

    The one copy of extraction's defaults: the function's signature, ``fmprobe extract --help`` and a study's
    ``[extract]`` table read them here. Building one checks every value (torch-free, so in a second, before any
    work); choice fields accept the plain strings or the enum members and hold the plain strings. The old names
    ``num_workers`` and ``max_images_per_split`` still work, with a ``DeprecationWarning``.

    Attributes
    ----------
    weights : str or Path or None
        A local checkpoint instead of the backbone's published weights (``--weights``).
    resolution : int or None
        Input size in pixels; None: the backbone's native size.
    readouts : tuple of str or None
        Which embeddings to store (e.g. ``cls``, ``mean``, ``block-6``); None: the backbone's default readout.
    batch_size : int
        Images per forward pass.
    device : str
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (:class:`Device`).
    dtype : str
        The compute dtype (:class:`ComputeDtype`).
    feature_dtype : str
        The storage dtype (:class:`FeatureDtype`).
    out : Path
        The cache folder: files go to ``out/<dataset>/<backbone>__<key>.h5``.
    on_error : str
        What an unreadable image does (:class:`OnError`).
    force : bool
        Extract again even where the cache holds the file.
    workers : int or None
        Image-decoding processes (``--workers``); None: cores - 1, at most 4.
    max_images : int or None
        A seeded subset of at most this many images per split (``--max-images``): a quick look.
    shard : str or tuple of int or None
        ``"I/N"`` or ``(I, N)``: extract only shard I of N (job arrays); the last shard to finish merges.
    distributed : bool or None
        Under torchrun, one shard per rank with rank 0 merging; None: detected from the environment.
    pixel_cache : bool
        Keep the decoded, resized images (uint8) in ``out/.pixels`` for later backbones of the same input geometry.
    progress : bool
        Show the progress bar; the inverse of the CLI's ``--quiet``.
    decode : str
        ``auto``: decode JPEG files at the reduced size the resize allows (recorded in the key); ``full``: always
        at full size.

    Raises
    ------
    fmprobe.errors.FmprobeError
        A value outside its choices, a batch size below 1 or a resolution that is not a whole number >= 1.

    Examples
    --------
    >>> from fmprobe import ExtractOptions
    >>> options = ExtractOptions(batch_size=32, workers=0, device="cpu")
    >>> options.batch_size, options.workers, options.out
    (32, 0, PosixPath('features'))
    >>> ExtractOptions(batch_size=0)
    Traceback (most recent call last):
    ...
    fmprobe.errors.FmprobeError: --batch-size 0: must be at least 1.
    """

    weights: str | Path | None = None
    resolution: int | None = None
    readouts: tuple[str, ...] | None = None
    batch_size: int = 64
    device: str = Device.auto.value
    dtype: str = ComputeDtype.auto.value
    feature_dtype: str = FeatureDtype.float16.value
    out: str | Path = "features"
    on_error: str = OnError.fail.value
    force: bool = False
    workers: int | None = None
    max_images: int | None = None
    shard: str | tuple[int, int] | None = None
    distributed: bool | None = None
    pixel_cache: bool = False
    progress: bool = True
    decode: str = Decode.auto.value

    def __post_init__(self) -> None:
        checked = {
            "on_error": choice(OnError, self.on_error, "--on-error", "use fail or skip."),
            "decode": choice(Decode, self.decode, "--decode", "use auto or full."),
            "feature_dtype": choice(FeatureDtype, self.feature_dtype, "--feature-dtype", "use float16 or float32."),
            "dtype": choice(ComputeDtype, self.dtype, "--dtype", f"use one of {', '.join(DTYPE_CHOICES)}."),
            "device": check_device_name(self.device),
            "readouts": tuple(self.readouts) if self.readouts else None,
            "out": Path(self.out),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)
        if self.batch_size < 1:
            raise FmprobeError(f"--batch-size {self.batch_size}: must be at least 1.")
        if self.resolution is not None and (isinstance(self.resolution, bool) or int(self.resolution) != self.resolution or self.resolution < 1):
            raise FmprobeError(
                f"--resolution {self.resolution}: must be a whole number of pixels, at least 1 (leave it out for the "
                "backbone's native size)."
            )


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_native_bf16() -> bool:
    """True where bf16 matrix math runs in hardware (AVX512-BF16 or AMX-BF16; Apple/ARM: BF16 extension)."""
    flags = cpu_flags()
    return bool({"avx512_bf16", "amx_bf16", "bf16"} & flags)


def choose_device(requested: str = "auto", local_rank: int | None = None) -> torch.device:
    import torch

    requested = check_device_name(requested)
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise FmprobeError(f"--device {requested}: CUDA is not available on this machine; use --device cpu or auto.")
    if requested.startswith("cuda:"):
        return torch.device(requested)
    rank = local_rank if local_rank is not None else int(os.environ.get("LOCAL_RANK", 0))
    return torch.device("cuda", rank % max(torch.cuda.device_count(), 1))


def dtype_candidates(device: torch.device, requested: str = "auto") -> tuple[DtypeName, ...]:
    """The dtypes ``auto`` may pick here: one where the answer is known, (bf16, fp32) where only a timed
    probe can tell (CPUs with native bf16 still run some models slower in bf16 than in fp32)."""
    chosen = choose_dtype(device, requested)
    requested = os.environ.get("FMPROBE_DTYPE", requested) if requested == "auto" else requested
    if requested == "auto" and device.type == "cpu" and chosen == "bf16":
        return ("bf16", "fp32")
    return (chosen,)


def timed_choice(candidates: tuple[DtypeName, ...], run: Callable[[DtypeName], None], repeats: int = 2) -> tuple[DtypeName, dict[str, float]]:
    """The fastest of ``candidates`` for ``run`` (one warm-up call each, then the best of ``repeats``)."""
    seconds: dict[str, float] = {}
    for dtype in candidates:
        run(dtype)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            run(dtype)
            best = min(best, time.perf_counter() - start)
        seconds[dtype] = best
    return min(candidates, key=lambda d: seconds[d]), seconds


def choose_dtype(device: torch.device, requested: str = "auto") -> DtypeName:
    """The compute dtype for ``device``: ``requested`` unless ``auto`` (also settable by ``FMPROBE_DTYPE``).

    ``auto`` by capability alone: extraction refines it with a timed probe (``dtype_candidates``)."""
    import torch

    requested = requested.value if isinstance(requested, ComputeDtype) else requested
    requested = os.environ.get("FMPROBE_DTYPE", requested) if requested == "auto" else requested
    if requested not in DTYPE_CHOICES:
        raise FmprobeError(f"--dtype {requested!r}: use one of {', '.join(DTYPE_CHOICES)}.")
    if requested != "auto":
        if requested == "fp16" and device.type == "cpu":
            raise FmprobeError("--dtype fp16 is not supported on the CPU; use bf16 or fp32.")
        return requested  # type: ignore[return-value]
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def torch_dtype(name: DtypeName) -> torch.dtype:
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


@contextlib.contextmanager
def autocast(device: torch.device, dtype: DtypeName) -> Iterator[None]:
    if dtype == "fp32":
        yield
        return
    import torch

    with torch.autocast(device_type=device.type, dtype=torch_dtype(dtype)):
        yield


# Packages whose versions a bug report needs (read from the installed metadata: nothing is imported).
REPORTED_PACKAGES = ("torch", "torchvision", "timm", "numpy", "scikit-learn", "lightgbm", "h5py", "pandas", "pillow",
                     "safetensors", "open_clip_torch", "transformers", "huggingface_hub", "typer")  # fmt: skip


def environment() -> list[tuple[str, str]]:
    """What ``fmprobe env`` prints for a bug report: versions, the CPU and its bf16 capability, the device and the
    compute dtype ``auto`` picks on it (by capability; extraction may still time bf16 against fp32), cache folders.

    Imports torch (it is a diagnostic): the device and dtype rows are what torch sees."""
    import platform
    from importlib import metadata

    from fmprobe._io import __version__, cpu_model, user_cache_dir

    rows = [("fmprobe", __version__), ("python", platform.python_version()), ("platform", platform.platform())]
    for name in REPORTED_PACKAGES:
        try:
            rows.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            rows.append((name, "not installed"))
    rows += [("cpu", f"{cpu_model()} ({os.cpu_count()} cores)"),
             ("cpu bf16", "native (avx512_bf16/amx)" if cpu_has_native_bf16() else "emulated (slow): auto uses fp32")]  # fmt: skip
    rows += _device_rows()
    home = Path.home() / ".cache"
    rows += [("fmprobe cache", str(user_cache_dir())),
             ("huggingface cache", os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or str(home / "huggingface")),
             ("torch hub", os.environ.get("TORCH_HOME") or str(home / "torch")),
             ("FMPROBE_DTYPE", os.environ.get("FMPROBE_DTYPE", "(unset)"))]  # fmt: skip
    return rows


def _device_rows() -> list[tuple[str, str]]:
    """The device ``auto`` picks, the GPUs torch sees and the dtype ``auto`` would use on that device."""
    try:
        import torch
    except ImportError:
        return [("device", "torch is not installed")]
    device = choose_device("auto")
    gpus = [f"{i}: {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return [("device (auto)", str(device)), ("gpus", "; ".join(gpus) or "none visible"),
            ("compute dtype (auto)", choose_dtype(device)), ("torch threads", str(torch.get_num_threads()))]  # fmt: skip
