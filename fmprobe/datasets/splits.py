"""Seeded, stratified, group-aware splitting, persisted next to the data so every run sees the same split.

Grouping matters in medicine: two images of one patient (or one lesion) in train and test inflate every number.
When a dataset has a ``group`` column, whole groups are assigned to one split.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from fmprobe._io import atomic_write_text, user_cache_dir
from fmprobe.datasets.base import FileSource, ImageSource, Split, take_metadata
from fmprobe.errors import DatasetError
from fmprobe.tasks import SPLIT_NAMES, SplitName

DEFAULT_FRACTIONS: tuple[float, float, float] = (0.7, 0.15, 0.15)
SPLIT_VERSION = 2
"""The algorithm of ``grouped_stratified_split``, in the saved file's name (``fmprobe_split_v2_seed0_...``): a file
drawn by another version is never picked up as this one's. Version 1 (no tag) assigned groups largest first."""

OVERALL_WEIGHT = 10.0
"""How much the overall split sizes count against the per-stratum ones when a group is placed. Strata too small to
split in proportion (multi-label combinations with one or two patients) would otherwise overfill val and test
(a stratum of 2 at 70/15/15 goes 1/1/0); weighted 10, the overall lag decides those and the sizes stay within a
point of target, while a stratum of 6 still goes 4/1/1 (weighted 30, small strata start to miss a split)."""

log = logging.getLogger(__name__)


def resolved(path: Path) -> Path:
    """``path`` made absolute with symlinks followed; a symlink loop (or an unreadable link) keeps the absolute
    path, so the error comes later, from reading the file, where ``--on-error skip`` can record it."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # Python < 3.13 raises RuntimeError for a symlink loop
        return path.absolute()


def stratum_of(label: np.ndarray) -> str:
    """The stratification key of one label (multi-label rows stratify on their positive set)."""
    if np.ndim(label) == 0:
        return str(int(label))
    return "".join(str(int(v)) for v in np.asarray(label).ravel())


def grouped_stratified_split(
    labels: np.ndarray,
    groups: Sequence[str] | None = None,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
) -> np.ndarray:
    """Assign every sample to 0 (train), 1 (val) or 2 (test), keeping each group in one split.

    Groups are visited in an order shuffled with ``seed``; each goes to the split furthest behind its target,
    measured as the share of the target still missing, per stratum (weighted by the group's samples in each) plus
    ``OVERALL_WEIGHT`` times the same over all strata. The score is linear in the group's counts, so a group's
    size never decides where it goes, and proportional shares interleave the splits (a stratum of 6 at 70/15/15
    gives 4/1/1). Version 1 handed out groups largest first, which put multi-image lesions in train and left
    val/test with singletons from another source mix.
    """
    n = len(labels)
    if not np.isclose(sum(fractions), 1.0) or min(fractions) < 0:
        raise DatasetError(f"split fractions {fractions} must be non-negative and sum to 1.")
    group_keys = list(groups) if groups is not None else [str(i) for i in range(n)]
    members: dict[str, list[int]] = defaultdict(list)
    for index, key in enumerate(group_keys):
        members[key].append(index)
    strata = [stratum_of(label) for label in labels]
    stratum_index = {name: k for k, name in enumerate(sorted(set(strata)))}
    column = np.asarray([stratum_index[name] for name in strata], dtype=np.int64)

    target = np.asarray(fractions, dtype=float)
    open_split = target > 0
    per_share = np.where(open_split, 1 / np.where(open_split, target, 1), 0.0)  # 1 / fraction; 0 where closed
    stratum_size = np.bincount(column, minlength=len(stratum_index)).astype(float)
    filled = np.zeros((3, len(stratum_index)))  # samples placed, per split and stratum
    closed = np.where(open_split, 0.0, -np.inf)  # a split with fraction 0 gets nothing
    rng = np.random.default_rng(seed)
    keys = sorted(members)
    assignment = np.empty(n, dtype=np.int8)
    for position in rng.permutation(len(keys)):
        idx = members[keys[position]]
        in_strata, counts = np.unique(column[idx], return_counts=True)
        behind = 1 - filled[:, in_strata] / stratum_size[in_strata] * per_share[:, None]  # share of target missing
        overall = 1 - filled.sum(axis=1) / n * per_share
        choice = int(np.argmax(behind @ counts + OVERALL_WEIGHT * len(idx) * overall + closed))
        assignment[idx] = choice
        filled[choice, in_strata] += counts
    return assignment


def load_or_create_split(
    split_file: Path,
    ids: Sequence[str],
    labels: np.ndarray,
    groups: Sequence[str] | None,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
) -> np.ndarray:
    """Read the persisted split for ``ids`` from ``split_file``, creating it the first time.

    A split file that does not cover exactly these ids (data added or removed since) is refused rather than
    silently re-drawn, because a re-draw would move test images into train for results already published.
    """
    names = SPLIT_NAMES
    if split_file.exists():
        rows = _read_split_file(split_file)
        if not rows or set(rows[0]) != {"id", "split"}:
            raise DatasetError(f"{split_file}: not an fmprobe split file (columns id,split). Delete it to re-split.")
        stored = {r["id"]: r["split"] for r in rows}
        missing = [i for i in ids if i not in stored]
        extra = set(stored) - set(ids)
        if missing or extra:
            example = (missing or sorted(extra))[:3]
            raise DatasetError(
                f"{split_file}: the saved split does not match the data ({len(missing)} new samples, {len(extra)} "
                f"gone, e.g. {example}). Delete the file to draw a new split (earlier results then no longer "
                "share a test set with new ones)."
            )
        bad = {v for v in stored.values() if v not in names}
        if bad:
            raise DatasetError(f"{split_file}: unknown split names {sorted(bad)}; use train, val or test.")
        return np.asarray([names.index(stored[i]) for i in ids], dtype=np.int8)

    assignment = grouped_stratified_split(labels, groups, fractions, seed)
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["id", "split"])
    writer.writerows([sample_id, names[a]] for sample_id, a in zip(ids, assignment))
    try:
        split_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(split_file, text.getvalue())
    except OSError as err:
        raise DatasetError(
            f"cannot save the drawn split to {split_file} ({err.strerror or err}): the data folder is read-only and "
            f"so is {split_file.parent}. Make the data folder or {split_file.parent} writable, give "
            "?split_file=PATH in a writable place, or set FMPROBE_CACHE to a writable folder (the split is saved so "
            "that every run sees the same one)."
        ) from None
    shares = "/".join(f"{round(f * 100)}" for f in fractions)
    log.info(
        f"drew a {shares} split of {len(ids)} samples (seed {seed}, {'grouped' if groups is not None else 'per image'})"
        f" and saved it to {split_file}; every run reuses it (delete it to draw again)."
    )
    return assignment


def _read_split_file(split_file: Path) -> list[dict[str, str]]:
    try:
        with split_file.open(newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DatasetError(f"{split_file}: cannot read the saved split ({err}). Delete it to draw a new split.") from None


def split_file_for(data_path: Path, seed: int, fractions: tuple[float, float, float], grouping: str = "") -> Path:
    """Where the persisted split of a dataset lives: beside its data, or in the user cache if that is read-only.

    The name carries ``SPLIT_VERSION``, so a split drawn by an earlier algorithm is not reused; when one is found
    where that version saved it, a warning names it (results computed on it have a different test set). A
    ``grouping`` the user chose (a column, a file-name regex) tags the name too: a split drawn image by image is
    never read back as a grouped one."""
    tag = f"v{SPLIT_VERSION}_seed{seed}" + (f"_group-{hashlib.sha256(grouping.encode()).hexdigest()[:6]}" if grouping else "")
    candidate, fallback = _split_places(data_path, tag, fractions)
    chosen = candidate if candidate.exists() or os.access(candidate.parent, os.W_OK) else fallback
    if not chosen.exists():
        earlier = [p for p in _split_places(data_path, f"seed{seed}", fractions) if p.exists()]
        if earlier:
            log.warning(
                f"{earlier[0]} was drawn by an earlier split algorithm (version 1, largest groups first, biased "
                f"by group size); drawing a version {SPLIT_VERSION} split into {chosen.name}. Results computed "
                "on the earlier file used another test set."
            )
    return chosen


def chosen_split_file(
    data_path: Path, seed: int, fractions: tuple[float, float, float], split_file: str | None, root: Path,
    grouping: str = "",
) -> Path:  # fmt: skip
    """The user's ``?split_file=`` (a relative path is relative to the data folder ``root``), else
    :func:`split_file_for`."""
    if split_file is None:
        return split_file_for(data_path, seed, fractions, grouping)
    if not split_file.strip():
        raise DatasetError("split_file= is empty; give a path (relative to the data folder), or drop the option.")
    return resolved(root / Path(split_file).expanduser())


CARVE_SHARE = 0.15
"""The share of train that becomes a missing val or test split when only one is missing (the rest stays train)."""


def carve_from_train(
    assignment: np.ndarray, ids: Sequence[str], labels: np.ndarray, groups: Sequence[str] | None,
    split_path: Callable[[tuple[float, float, float]], Path], seed: int, fractions: tuple[float, float, float],
) -> bool:  # fmt: skip
    """Draw the splits missing from ``assignment`` (0 train, 1 val, 2 test) out of train, in place: seeded,
    stratified, grouped, persisted at ``split_path(fractions of train)``. Both missing: train is split by
    ``fractions``; one: ``CARVE_SHARE`` of train becomes it. False when nothing was missing."""
    missing = [s for s in (1, 2) if not (assignment == s).any()]
    if not missing:
        return False
    carve = fractions if len(missing) == 2 else (1 - CARVE_SHARE, CARVE_SHARE * (1 in missing), CARVE_SHARE * (2 in missing))
    in_train = np.flatnonzero(assignment == 0)
    sub_groups = [groups[i] for i in in_train] if groups is not None else None
    drawn = load_or_create_split(split_path(carve), [ids[i] for i in in_train], labels[in_train], sub_groups, carve, seed)
    assignment[in_train] = drawn
    return True


def _split_places(data_path: Path, tag: str, fractions: tuple[float, float, float]) -> tuple[Path, Path]:
    """The split file's name beside the data and in the user cache, for one version/seed ``tag``."""
    tag += "_" + "-".join(f"{round(f * 100)}" for f in fractions)
    folder = data_path if data_path.is_dir() else data_path.parent
    stem = "" if data_path.is_dir() else f"{data_path.stem}."
    where = hashlib.sha256(str(data_path.resolve()).encode()).hexdigest()[:12]
    return folder / f"{stem}fmprobe_split_{tag}.csv", user_cache_dir() / "splits" / f"{where}_{stem}fmprobe_split_{tag}.csv"


def assign_splits(
    ids: Sequence[str],
    labels: np.ndarray,
    paths: Sequence[Path],
    assignment: np.ndarray,
    on_empty: Callable[[str], str],
    make_source: Callable[[tuple[Path, ...]], ImageSource] = FileSource,
    names: Sequence[SplitName] = SPLIT_NAMES,
    metadata: dict[str, Sequence[str]] | None = None,
) -> dict[str, Split]:
    """The ``Split`` of each of ``names`` from a per-sample ``assignment`` (0 train, 1 val, 2 test).

    ``metadata`` maps a key to one value per sample (aligned with ``ids``), split along with them. An empty split
    is refused with ``on_empty(name)``: the adapter knows the fix (delete its split file, add images to a
    folder)."""
    splits: dict[str, Split] = {}
    for name in names:
        members = np.flatnonzero(assignment == SPLIT_NAMES.index(name))
        if len(members) == 0:
            raise DatasetError(on_empty(name))
        source = make_source(tuple(paths[i] for i in members))
        splits[name] = Split(
            name, tuple(ids[i] for i in members), labels[members], source, take_metadata(metadata or {}, members)
        )
    return splits


def refuse_duplicates(paths: Sequence[Path], assignment: Sequence[int], row_of: Callable[[int], str], where: str) -> None:
    """Refuse one image listed twice: the same file under two spellings (``cat/x.png``, ``./cat/x.png``, a
    symlink) anywhere, or the same bytes in two splits (a copy in train and test is leakage).

    Paths are compared resolved. Contents are compared in narrowing rounds, each only among files still
    colliding across splits: size, then the first and last 4 KiB, then every byte; so a typical dataset is
    stat-ed and a few files are read. Identical bytes within one split are allowed: published datasets contain
    exact copies, and a copy inside one split does not leak (it weighs that image twice). ``row_of(i)`` names
    sample ``i`` (its manifest line or its file) in the message."""
    first: dict[Path, int] = {}
    for index, path in enumerate(paths):
        key = resolved(path)
        if (earlier := first.setdefault(key, index)) != index:
            _refuse_pair(where, "the same file", key, earlier, index, assignment, row_of)
    candidates = [list(first.values())]
    for fingerprint in (_size, _ends, _content):
        candidates = _across_splits(candidates, assignment, lambda i: fingerprint(resolved(paths[i])))  # noqa: B023
    for members in candidates:
        placed = {int(assignment[i]): i for i in members}  # one member per split
        earlier, index = sorted(placed.values())[:2]
        _refuse_pair(where, "identical image bytes", paths[index], earlier, index, assignment, row_of)


def _across_splits(groups: list[list[int]], assignment: Sequence[int], key: Callable[[int], object]) -> list[list[int]]:
    """Split each group by ``key`` (``None``: unreadable, dropped; extraction reports it) and keep the parts that
    still span two splits."""
    kept = []
    for group in groups:
        parts: dict[object, list[int]] = defaultdict(list)
        for index in group:
            if (value := key(index)) is not None:
                parts[value].append(index)
        kept += [part for part in parts.values() if len({int(assignment[i]) for i in part}) > 1]
    return kept


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _ends(path: Path, span: int = 4096) -> bytes | None:
    try:
        with path.open("rb") as fh:
            head = fh.read(span)
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - span))
            return head + fh.read(span)
    except OSError:
        return None


def _content(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _refuse_pair(
    where: str, what: str, path: Path, earlier: int, index: int, assignment: Sequence[int], row_of: Callable[[int], str]
) -> None:
    first, second = SPLIT_NAMES[int(assignment[earlier])], SPLIT_NAMES[int(assignment[index])]
    placed = f"in {first} and {second}: leakage" if first != second else f"twice in {first}"
    raise DatasetError(
        f"{where}: {what} ({path}) as {row_of(earlier)} and {row_of(index)}, {placed}. Each image may appear once: "
        "remove one of the two."
    )


def empty_split(split_file: Path, name: str) -> str:
    """The error for an empty split of a saved split file: drawing it again is the fix."""
    return f"{split_file}: the {name} split is empty; delete the file to draw a new split."


def group_conflict(groups: Sequence[str], assignment: Sequence[int]) -> tuple[int, SplitName, SplitName] | None:
    """The first sample whose group (patient, lesion) already appeared in another split, as (its index, the
    earlier split, its split); ``None`` when every group stays in one split. Callers word the error."""
    where: dict[str, int] = {}
    for index, (group, a) in enumerate(zip(groups, assignment, strict=True)):
        if where.setdefault(group, int(a)) != a:
            return index, SPLIT_NAMES[where[group]], SPLIT_NAMES[int(a)]
    return None
