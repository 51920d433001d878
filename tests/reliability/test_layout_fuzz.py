"""The label/layout fuzzer: random folder trees and CSV manifests (split-folder subsets, class names that look
like splits, path aliases, symlinks and symlink loops, copied bytes, label spellings, ordinal options). Every case ends in a dataset whose
invariants hold or in a DatasetError; never another exception. FMPROBE_FAULT_TRIALS scales the count.

Files hold distinct bytes, not images: loading a dataset lists and stats files, it never decodes them."""

from __future__ import annotations

import itertools
import shutil
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fmprobe.datasets import Dataset, load_dataset
from fmprobe.datasets.folder import SPLIT_LIKE
from fmprobe.datasets.manifest import normalise_label
from fmprobe.datasets.splits import resolved
from fmprobe.errors import DatasetError
from reliability.faults import TRIALS

OUTCOMES: Counter[str] = Counter()
FOLDERS = ["train", "val", "test", "Validation", "training"]
CLASSES = ["cat", "dog", "none", "mild", "severe", "1", "1.0", "01", "2", "10", "NA", "train", "test", "val", "Test"]
OPTIONS = ["", "", "", "?task=ordinal", "?task=ordinal&order=none,mild,severe", "?task=ordinal&order=1,2,10", "?seed=3",
           "?task=multiclass", "?order=a,b"]  # fmt: skip
_counter = itertools.count()


def _write(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(f"image {next(_counter)}".encode())
    return path


def _check(ds: Dataset, label_of: dict[Path, str], split_layout: bool) -> None:
    """The invariants of every loaded dataset."""
    assert set(ds.splits) == {"train", "val", "test"} and all(len(s) for s in ds.splits.values())
    where: dict[Path, str] = {}
    ids: set[str] = set()
    for name, split in ds.splits.items():
        assert not ids & set(split.ids), "an id in two splits"
        ids |= set(split.ids)
        for i, label in enumerate(split.labels):
            path = resolved(split.source.paths[i])  # type: ignore[attr-defined]
            assert where.setdefault(path, name) == name, f"{path} in two splits"
            assert 0 <= int(label) < len(ds.class_names)
            assert ds.class_names[int(label)] == normalise_label(label_of[path]), "label changed on the way"
    assert len(set(ds.class_names)) == len(ds.class_names) >= 2
    if split_layout:
        assert not {c.lower() for c in ds.class_names} & SPLIT_LIKE, "a split folder read as a class"
    if ds.task == "ordinal" and "order=" not in ds.spec:
        assert all(c.lstrip("-").replace(".", "", 1).isdigit() for c in ds.class_names), "words sorted as grades"


def _outcome(kind: str, load, check) -> None:  # noqa: ANN001
    try:
        ds = load()
    except DatasetError as err:
        assert str(err), "an error without a message"
        OUTCOMES[f"{kind}: DatasetError"] += 1
        return
    check(ds)
    OUTCOMES[f"{kind}: loaded"] += 1


SPLIT_SUBSETS = st.lists(st.sampled_from(["train", "val", "test"]), min_size=1, max_size=3, unique=True)
TOPS = st.one_of(
    st.just([]),
    SPLIT_SUBSETS,
    SPLIT_SUBSETS,
    st.lists(st.sampled_from(FOLDERS + CLASSES[:4]), min_size=1, max_size=4, unique=True),
)


@settings(max_examples=40 * TRIALS, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    tops=TOPS,
    classes=st.lists(st.sampled_from(CLASSES[:6] + CLASSES), min_size=2, max_size=3, unique=True),
    counts=st.lists(st.sampled_from([0, 3, 6, 8, 9]), min_size=16, max_size=16),
    alias=st.sampled_from(["none", "symlink", "copy", "loop"]),
    option=st.sampled_from(OPTIONS),
)
def test_fuzzed_folder_layouts_load_consistently_or_are_refused(tmp_path_factory, tops, classes, counts, alias, option) -> None:  # noqa: ANN001
    root = tmp_path_factory.mktemp("layout") / "images"
    label_of: dict[Path, str] = {}
    files = []
    folders = [(root / top / cls, cls) for top in tops if top in FOLDERS for cls in classes]
    folders += [(root / top, top) for top in tops if top not in FOLDERS]
    folders += [(root / cls, cls) for cls in classes] if not tops else []  # a flat class layout
    for (folder, label), count in zip(folders, itertools.cycle(counts)):
        for _ in range(count + (6 if folder.parent.name in ("train", root.name) else 0)):
            files.append(_write(folder / f"{next(_counter)}.png"))
            label_of[resolved(files[-1])] = label
    if alias != "none" and len(files) >= 2:
        twin = files[-1].parent / f"twin{next(_counter)}.png"
        if alias == "loop":
            twin.symlink_to(twin)
        else:
            twin.symlink_to(files[0]) if alias == "symlink" else shutil.copyfile(files[0], twin)
        label_of.setdefault(resolved(twin), label_of[resolved(files[-1])])  # a copy is labelled by its folder
    root.mkdir(parents=True, exist_ok=True)
    split_layout = any(t.lower() in SPLIT_LIKE for t in tops)
    _outcome("folder", lambda: load_dataset(f"folder:{root}{option}"), lambda ds: _check(ds, label_of, split_layout))


VOCABULARIES = [["a", "b"], ["none", "mild", "severe"], ["0", "1", "1.0", "00"], ["1", "2", "10", "2.0"], ["2.5", "2.50", "3"]]


@settings(max_examples=40 * TRIALS, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    vocabulary=st.sampled_from(VOCABULARIES),
    picks=st.lists(st.integers(0, 3), min_size=12, max_size=30),
    missing=st.one_of(st.none(), st.none(), st.tuples(st.integers(0, 11), st.sampled_from(["NA", "N/A", "", "nan", "null"]))),
    alias=st.one_of(st.none(), st.tuples(st.integers(0, 11), st.integers(0, 11), st.sampled_from(["./", "sub/../", ""]))),
    with_split=st.booleans(),
    loop=st.booleans(),
    option=st.sampled_from(OPTIONS),
)
def test_fuzzed_manifests_load_consistently_or_are_refused(tmp_path_factory, vocabulary, picks, missing, alias, with_split, loop, option) -> None:  # noqa: ANN001
    root = tmp_path_factory.mktemp("manifest")
    (root / "sub").mkdir()
    rows = [[f"{i}.png", vocabulary[p % len(vocabulary)], ("train", "val", "test")[i % 3]] for i, p in enumerate(picks)]
    if loop:  # a row whose file is a symlink to itself
        (root / "loop.png").symlink_to(root / "loop.png")
        rows.append(["loop.png", vocabulary[0], "test"])
    if missing:
        rows[missing[0]][1] = missing[1]
    if alias:  # row b names row a's file, spelled with a prefix
        rows[alias[1]][0] = alias[2] + rows[alias[0]][0]
    label_of: dict[Path, str] = {}
    for path, label, _ in rows:
        if not (root / path).exists() and not (root / path).is_symlink():
            _write(root / path)
        label_of.setdefault(resolved(root / path), label)
    manifest = root / "m.csv"
    lines = ["path,label,split" if with_split else "path,label"] + [",".join(r if with_split else r[:2]) for r in rows]
    manifest.write_text("\n".join(lines) + "\n")
    _outcome("csv", lambda: load_dataset(f"csv:{manifest}{option}"), lambda ds: _check(ds, label_of, False))


def test_the_fuzzer_reached_both_outcomes() -> None:
    """Runs after the two sweeps (file order): both kinds of case loaded at least once and were refused at least
    once, so the invariants were checked and the refusals exercised. `-s` prints the counts."""
    if not OUTCOMES:
        pytest.skip("run with the two sweeps above")
    print("layout fuzzer:", dict(sorted(OUTCOMES.items())))
    assert all(OUTCOMES[f"{kind}: {end}"] for kind in ("folder", "csv") for end in ("loaded", "DatasetError"))
