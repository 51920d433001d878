"""MedMNIST v2/v3 2D datasets: ``medmnist:<flag>[@<size>]`` or a path to a MedMNIST-layout ``.npz``.

The file layout is the one the official ``medmnist`` package writes: keys ``{train,val,test}_{images,labels}``,
uint8 images ``[N, H, W]`` (grey) or ``[N, H, W, 3]`` (RGB), labels ``[N, 1]`` (or ``[N, L]`` multi-label).
The official splits are used as they are.

The task: a flag's published task (``medmnist:<flag>``, a file named like a flag, or ``?flag=<flag>`` for a copy under
another name), else the declared ``?task=`` (one of :data:`fmprobe.tasks.TASK_TYPES`, checked against the labels'
shape), else inferred from the labels (``[N, L]`` multilabel, else binary or multiclass, never ordinal) and said once
on stderr with how to declare it: a RetinaMNIST copy saved as ``retina_copy.npz`` would otherwise silently become a
multiclass task scored by balanced accuracy instead of quadratic kappa.
"""

from __future__ import annotations

import hashlib
import logging
import os
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from fmprobe.datasets.base import ArraySource, Dataset, Split, hash_file
from fmprobe.datasets.sources import TASK, DatasetSource, OptionSpec
from fmprobe.errors import DatasetError
from fmprobe.tasks import MISSING, SPLIT_NAMES, TASK_TYPES, TaskType

log = logging.getLogger(__name__)

SIZES = (28, 64, 128, 224)


@dataclass(frozen=True)
class FlagInfo:
    task: TaskType
    class_names: tuple[str, ...]
    description: str


ORGAN_CLASSES = (
    "bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right",
    "liver", "lung-left", "lung-right", "pancreas", "spleen",
)  # fmt: skip

# Task types and class names as published in medmnist's info.py (2D flags only).
FLAGS: dict[str, FlagInfo] = {
    "pathmnist": FlagInfo("multiclass", (
        "adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle", "normal colon mucosa",
        "cancer-associated stroma", "colorectal adenocarcinoma epithelium"), "colon pathology (NCT-CRC-HE-100K)"),
    "chestmnist": FlagInfo("multilabel", (
        "atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia", "pneumothorax",
        "consolidation", "edema", "emphysema", "fibrosis", "pleural", "hernia"), "chest X-ray (NIH ChestX-ray14)"),
    "dermamnist": FlagInfo("multiclass", (
        "actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma", "benign keratosis-like lesions",
        "dermatofibroma", "melanoma", "melanocytic nevi", "vascular lesions"), "dermatoscopy (HAM10000)"),
    "octmnist": FlagInfo("multiclass", (
        "choroidal neovascularization", "diabetic macular edema", "drusen", "normal"), "retinal OCT"),
    "pneumoniamnist": FlagInfo("binary", ("normal", "pneumonia"), "paediatric chest X-ray"),
    "retinamnist": FlagInfo("ordinal", ("0", "1", "2", "3", "4"), "colour fundus, DR grade (DeepDRiD)"),
    "breastmnist": FlagInfo("binary", ("malignant", "normal, benign"), "breast ultrasound"),
    "bloodmnist": FlagInfo("multiclass", (
        "basophil", "eosinophil", "erythroblast", "immature granulocytes", "lymphocyte", "monocyte", "neutrophil",
        "platelet"), "blood cell microscopy"),
    "tissuemnist": FlagInfo("multiclass", (
        "Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule", "Glomerular endothelial cells",
        "Interstitial endothelial cells", "Leukocytes", "Podocytes", "Proximal Tubule Segments",
        "Thick Ascending Limb"), "kidney cortex microscopy"),
    "organamnist": FlagInfo("multiclass", ORGAN_CLASSES, "abdominal CT, axial"),
    "organcmnist": FlagInfo("multiclass", ORGAN_CLASSES, "abdominal CT, coronal"),
    "organsmnist": FlagInfo("multiclass", ORGAN_CLASSES, "abdominal CT, sagittal"),
}

KEYS = tuple(f"{split}_{kind}" for split in SPLIT_NAMES for kind in ("images", "labels"))


def data_root() -> Path:
    """Where fmprobe looks for and downloads dataset files (``$FMPROBE_DATA`` or ``./data``)."""
    return Path(os.environ.get("FMPROBE_DATA", "data"))


def file_name(flag: str, size: int) -> str:
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"


def parse_flag(text: str) -> tuple[str, int]:
    """``'pneumoniamnist@224'`` -> ``('pneumoniamnist', 224)``, with named errors for bad flags and sizes."""
    flag, _, size_text = text.partition("@")
    flag = flag.strip().lower()
    if flag not in FLAGS:
        from fmprobe.registry import closest

        near = closest(flag, list(FLAGS))
        raise DatasetError(
            f"unknown MedMNIST flag {flag!r}." + (f" Closest: {', '.join(near)}." if near else "")
            + f" 2D flags: {', '.join(FLAGS)}."
        )
    try:
        size = int(size_text) if size_text else 28
    except ValueError:
        raise DatasetError(f"MedMNIST size {size_text!r} in {text!r} is not a number; use one of {SIZES}.") from None
    if size not in SIZES:
        raise DatasetError(f"MedMNIST size {size} in {text!r} does not exist; use one of {SIZES}.")
    return flag, size


def locate(flag: str, size: int) -> Path:
    """Find (or download, when the ``medmnist`` package and the network are available) one MedMNIST file."""
    name = file_name(flag, size)
    candidates = [data_root() / name, data_root() / "medmnist" / name, Path.home() / ".medmnist" / name]
    for path in candidates:
        if path.exists():
            return path
    target = data_root()
    try:
        import medmnist  # type: ignore[import-not-found]

        cls = getattr(medmnist, medmnist.INFO[flag]["python_class"])
        target.mkdir(parents=True, exist_ok=True)
        cls(split="test", download=True, root=str(target), size=size)
        if (target / name).exists():
            return target / name
    except ImportError:
        how = "`pip install medmnist` lets fmprobe download it, or download"
    except Exception as err:  # network failures come in many types; report the cause with the fix
        how = f"the download failed ({type(err).__name__}: {err}); download"
    else:
        how = "download"
    raise DatasetError(
        f"MedMNIST file {name} not found (looked in {', '.join(str(c.parent) for c in candidates)}). Offline: {how} "
        f"{name} from the MedMNIST release on Zenodo (record 10519652) and put it at {target / name}, or pass "
        "the path of the .npz as the dataset spec."
    )


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    hash_file(h, path)
    return h.hexdigest()[:20]


def _identity(path: Path, task: str, class_names: tuple[str, ...], declared: bool) -> str:
    """The file's digest; with a declared task or flag that the file's name does not imply, mixed with them, so the
    features cached under the inferred task are never reused for the declared one (undeclared keys unchanged)."""
    digest = _file_digest(path)
    if not declared:
        return digest
    return hashlib.sha256(f"{digest}|task={task}|classes={'|'.join(class_names)}".encode()).hexdigest()[:20]


def integer_labels(path: Path, key: str, raw: np.ndarray) -> np.ndarray:
    """``raw`` as int64, refusing what a cast would silently change: NaN/inf, fractions (1.5 -> 1), text, negatives
    (other than MISSING in a multi-label file, checked by the caller)."""
    if raw.dtype.kind in "biu":
        labels = raw.astype(np.int64)
    elif raw.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(raw).all(axis=1))
        if bad.size:
            raise DatasetError(
                f"{path}: {key} has a missing (NaN/inf) label at row {bad[0]} ({bad.size} rows in all); give every "
                "sample a class number, or drop the unlabelled samples from the file."
            )
        labels = raw.astype(np.int64)
        fraction = np.flatnonzero((labels != raw).any(axis=1))
        if fraction.size:
            raise DatasetError(
                f"{path}: {key} has a non-integer label {raw[fraction[0]].tolist()} at row {fraction[0]}; labels are "
                "class numbers 0, 1, ... (a cast would silently truncate it): fix the labels in the file."
            )
    else:
        raise DatasetError(f"{path}: {key} has dtype {raw.dtype}; labels must be integer class numbers 0, 1, ...")
    return labels


def _check_classes(path: Path, present: np.ndarray, num_classes: int | None) -> int:
    """The class count of a file without a published flag: ``num_classes`` when declared, else max + 1, refused when
    class numbers in between never occur (a 255 'missing' marker would otherwise make a 256-class task)."""
    top = int(present.max())
    if num_classes is not None:
        if num_classes < 2 or top >= num_classes:
            raise DatasetError(
                f"{path}: num_classes={num_classes}, but the labels go up to {top}; labels must be 0..{num_classes - 1} "
                "and there must be at least 2 classes."
            )
        return num_classes
    absent = sorted(set(range(top + 1)) - set(present.tolist()))
    if absent:
        shown = ", ".join(map(str, absent[:5])) + (", ..." if len(absent) > 5 else "")
        raise DatasetError(
            f"{path}: labels go up to {top} but classes {shown} ({len(absent)} of {top + 1}) never occur; is {top} a "
            f"'missing' marker? Remove or relabel those samples, or, if there really are {top + 1} classes, say so "
            f"with {path}?num_classes={top + 1}."
        )
    return top + 1


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """The six arrays of a MedMNIST-layout file (never unpickling), with errors that name the file."""
    if not path.exists():
        raise DatasetError(f"{path}: file not found. Check the path, or use a spec such as medmnist:pneumoniamnist.")
    try:
        archive = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise DatasetError(f"{path}: not a readable .npz file ({err}). Re-download it.") from err
    with archive:
        missing = [k for k in KEYS if k not in archive.files]
        if missing:
            raise DatasetError(
                f"{path}: not a MedMNIST-layout file; missing keys {missing} (found {archive.files}). Expected "
                f"{', '.join(KEYS)}."
            )
        try:
            return {k: archive[k] for k in KEYS}
        except ValueError as err:  # object arrays need pickle, which we never allow
            raise DatasetError(f"{path}: contains pickled objects ({err}); fmprobe only reads plain arrays.") from err


def _check_shapes(path: Path, arrays: dict[str, np.ndarray]) -> None:
    for split in SPLIT_NAMES:
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.dtype != np.uint8 or images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] != 3):
            raise DatasetError(
                f"{path}: {split}_images has dtype {images.dtype} and shape {images.shape}; expected uint8 "
                "[N,H,W] (grey) or [N,H,W,3] (RGB)."
            )
        if labels.ndim != 2 or labels.shape[0] != images.shape[0]:
            raise DatasetError(
                f"{path}: {split}_labels has shape {labels.shape}; expected [{images.shape[0]}, 1] or "
                f"[{images.shape[0]}, L]."
            )
        if not images.shape[0]:
            raise DatasetError(
                f"{path}: {split}_images is empty (0 samples); every split needs samples (probes choose their settings "
                "on val and are scored on test). Put samples in it, or list the images in a CSV manifest without a "
                "split column so that fmprobe draws a seeded split."
            )


def _split_labels(path: Path, arrays: dict[str, np.ndarray], task: TaskType) -> dict[str, np.ndarray]:
    """Each split's labels as int64 (``[N]``, or ``[N, L]`` multi-label with 0, 1 and MISSING)."""
    out = {}
    for split in SPLIT_NAMES:
        labels = integer_labels(path, f"{split}_labels", arrays[f"{split}_labels"])
        allowed = (0, 1, MISSING) if task == "multilabel" else None
        bad = labels[~np.isin(labels, allowed)] if allowed else labels[labels < 0]
        if bad.size:
            raise DatasetError(
                f"{path}: {split}_labels contains {int(bad[0])}; "
                + (f"multi-label entries are 0, 1 or {MISSING} (unknown)." if allowed else "class numbers start at 0.")
            )
        out[split] = labels if task == "multilabel" else labels[:, 0]
    return out


_told: set[str] = set()  # files whose inferred task was already reported (once per process)


def _check_task_shape(path: Path, task: TaskType, width: int, source: str) -> None:
    """A declared (or flag's) task must fit the labels: multilabel needs ``[N, L]``, the others ``[N, 1]``."""
    if (task == "multilabel") != (width > 1):
        shape = f"[N, {width}] labels ({width} label columns)" if width > 1 else "[N, 1] labels (one class per sample)"
        fits = "multilabel" if width > 1 else "|".join(t for t in TASK_TYPES if t != "multilabel")
        raise DatasetError(f"{path}: {source} is {task!r}, but the file has {shape}; use task={fits}.")


def _task_of(path: Path, flag: str | None, task: str | None, width: int) -> tuple[TaskType, bool]:
    """The file's task and whether it was inferred (no flag, no ``task`` option)."""
    if task is not None:
        _check_task_shape(path, task, width, "the declared task")  # type: ignore[arg-type]
        return task, False  # type: ignore[return-value]
    if flag:
        _check_task_shape(path, FLAGS[flag].task, width, f"the task of MedMNIST flag {flag!r}")
        return FLAGS[flag].task, False
    return ("multilabel" if width > 1 else "multiclass"), True


def _say_inferred(path: Path, spec: str | None, task: TaskType, class_names: tuple[str, ...]) -> None:
    """Tell once that the task was guessed from the labels, and how to declare it."""
    if str(path) in _told:
        return
    _told.add(str(path))
    named = spec or f"npz:{path}"
    joined = "&" if "?" in named else "?"
    what = f"{len(class_names)} labels" if task == "multilabel" else f"{len(class_names)} classes"
    other = "ordinal" if task != "multilabel" else "multilabel"
    log.warning(
        f"{path.name}: task inferred as {task} ({what}, from the labels); declare it with {named}{joined}task={other} "
        f"(any of {'|'.join(TASK_TYPES)}), or name the MedMNIST flag of a renamed file with {named}{joined}flag=<flag>."
    )


def load_npz(
    path: Path, spec: str | None = None, *, flag: str | None = None, num_classes: int | None = None,
    task: str | None = None,
) -> Dataset:  # fmt: skip
    """Read a MedMNIST-layout file, checking keys, dtypes, shapes and labels with errors that name the file.

    ``flag`` (or a file named like one, ``pathmnist_224.npz``) gives the published task and class names; ``task``
    declares the task (overriding a flag's); otherwise it is inferred from the labels, and the log says so.
    ``num_classes`` declares a class count the labels do not show."""
    arrays = _read_arrays(path)
    _check_shapes(path, arrays)
    stem = path.stem.split("_")[0].lower()
    stem_flag = stem if stem in FLAGS else None
    declared = (flag or stem_flag) != stem_flag or (task is not None and task != (stem_flag and FLAGS[stem_flag].task))
    flag = flag or stem_flag
    width = arrays["train_labels"].shape[1]
    task, inferred = _task_of(path, flag, task, width)
    labels = _split_labels(path, arrays, task)
    if flag:
        class_names = FLAGS[flag].class_names
        if num_classes is not None and num_classes != len(class_names):
            raise DatasetError(f"{path}: num_classes={num_classes}, but {flag} has {len(class_names)} classes; drop it.")
        if task == "binary" and len(class_names) != 2:
            raise DatasetError(f"{path}: task=binary, but {flag} has {len(class_names)} classes; use task=multiclass|ordinal.")
    elif task == "multilabel":
        class_names = tuple(f"label_{i}" for i in range(width))
    else:
        count = _check_classes(path, np.unique(np.concatenate(list(labels.values()))), num_classes)
        if inferred:
            task = "binary" if count == 2 else "multiclass"
        elif task == "binary" and count != 2:
            raise DatasetError(f"{path}: task=binary, but the labels have {count} classes; use task=multiclass|ordinal.")
        class_names = tuple(str(i) for i in range(count))
    if inferred:
        _say_inferred(path, spec, task, class_names)

    splits: dict[str, Split] = {}
    for split in SPLIT_NAMES:
        if task != "multilabel" and labels[split].max() >= len(class_names):
            raise DatasetError(
                f"{path}: {split}_labels contains class {int(labels[split].max())} but {flag} has {len(class_names)} classes."
            )
        ids = tuple(f"{split}/{i}" for i in range(len(labels[split])))
        splits[split] = Split(split, ids, labels[split], ArraySource(arrays[f"{split}_images"], f"{path.name}:{split}"))

    return Dataset(
        name=path.stem,
        spec=spec or str(path),
        task=task,
        class_names=class_names,
        splits=splits,
        content_digest=_identity(path, task, class_names, declared),
        description=FLAGS[flag].description if flag else "MedMNIST-layout file",
    )


def load_medmnist(argument: str, spec: str) -> Dataset:
    """Resolve ``<flag>[@<size>]`` to a file (local, or downloaded when possible) and load it."""
    flag, size = parse_flag(argument)
    return load_npz(locate(flag, size), spec, flag=flag)


MEDMNIST = DatasetSource(
    name="medmnist",
    loader=load_medmnist,
    takes_path=False,
    example="medmnist:pneumoniamnist@224",
    description=f"MedMNIST v2/v3 2D, official splits; <flag>[@{'|'.join(map(str, SIZES))}], found in $FMPROBE_DATA or downloaded",
)
NPZ = DatasetSource(
    name="npz",
    loader=load_npz,
    takes_path=True,
    example="data/pneumoniamnist_224.npz",
    description="a MedMNIST-layout .npz file ({train,val,test}_{images,labels}), official splits",
    options=(
        OptionSpec("num_classes", None, "class count, when some class numbers never occur in the labels", int),
        replace(TASK, digest_default=False),  # added after release: default files keep their names
        OptionSpec(
            "flag", None, "the MedMNIST flag of a renamed copy (its task and class names)", choices=tuple(FLAGS),
            digest_default=False,
        ),
    ),
    suffixes=(".npz",),
)
