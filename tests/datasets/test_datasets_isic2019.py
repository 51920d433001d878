"""ISIC 2019 in its challenge layout: lesion-grouped and image-level splits, UNK refused, named errors; the real
label files parsed in full when present."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from _datasets_layouts import groups_disjoint, random_image, write_csv
from _helpers import shared_file
from PIL import Image

from fmprobe.datasets import isic2019, load_dataset
from fmprobe.datasets.splits import group_conflict, grouped_stratified_split
from fmprobe.errors import DatasetError

ISIC_COLUMNS = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]


@pytest.fixture
def isic_dir(tmp_path: Path) -> Path:
    root = tmp_path / "isic"
    truth, meta = [], []
    for i in range(80):
        name = f"ISIC_{i:07d}" + ("_downsampled" if i % 9 == 0 else "")
        label = (i // 2) % 8  # pairs of images share a class and (mostly) a lesion
        truth.append([name] + [f"{float(c == label):.1f}" for c in range(9)])
        lesion = "" if i % 10 == 3 else f"IL_{i // 2:07d}"
        meta.append([name, 45, "anterior torso", lesion, "female"])
        (root / "ISIC_2019_Training_Input").mkdir(parents=True, exist_ok=True)
        Image.fromarray(random_image(i)).save(root / "ISIC_2019_Training_Input" / f"{name}.jpg")
    write_csv(root / "ISIC_2019_Training_GroundTruth.csv", ["image"] + ISIC_COLUMNS, truth)
    write_csv(root / "ISIC_2019_Training_Metadata.csv", ["image", "age_approx", "anatom_site_general", "lesion_id", "sex"], meta)
    return root


def test_isic_grouped_by_lesion_and_ungrouped(isic_dir: Path) -> None:
    ds = load_dataset(f"isic2019:{isic_dir}")
    assert ds.task == "multiclass" and ds.primary_metric == "balanced_accuracy"
    assert ds.class_names == ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC") and "UNK" not in ds.class_names
    assert sum(len(s) for s in ds.splits.values()) == 80 and len(ds.splits["test"]) >= 6
    assert any(i.endswith("_downsampled") for s in ds.splits.values() for i in s.ids)
    ids, _, groups = isic2019.read_labels(isic_dir)
    assert groups is not None
    group_of = dict(zip(ids, groups, strict=True))
    assert groups_disjoint(ds, group_of.__getitem__)
    assert group_of["ISIC_0000003"] == "image:ISIC_0000003"  # no lesion_id: its own group
    flat = load_dataset(f"isic2019:{isic_dir}?grouping=none")
    assert flat.content_digest != ds.content_digest and flat.extra["grouping"] == "none"
    assert sorted(p.name for p in isic_dir.glob("*fmprobe_split*")) == [
        "ISIC_2019_Training_GroundTruth_lesion.fmprobe_split_v2_seed0_80-10-10.csv",
        "ISIC_2019_Training_GroundTruth_none.fmprobe_split_v2_seed0_80-10-10.csv",
    ]


def test_isic_nested_image_folder_and_no_metadata_when_ungrouped(isic_dir: Path) -> None:
    images = isic_dir / "ISIC_2019_Training_Input"
    nested = isic_dir / "tmp_nested"
    images.rename(nested)
    images.mkdir()
    nested.rename(images / "ISIC_2019_Training_Input")  # the zip unpacked into a folder of the same name
    (isic_dir / "ISIC_2019_Training_Metadata.csv").unlink()
    ds = load_dataset(f"isic2019:{isic_dir}?grouping=none")
    assert "ISIC_2019_Training_Input/ISIC_2019_Training_Input" in ds.splits["train"].source.describe(0)
    with pytest.raises(DatasetError, match=r"Metadata\.csv not found: grouping by lesion.*grouping=none"):
        load_dataset(f"isic2019:{isic_dir}")


def test_isic_named_errors(isic_dir: Path) -> None:
    gt = isic_dir / "ISIC_2019_Training_GroundTruth.csv"
    original = gt.read_text()
    (isic_dir / "ISIC_2019_Training_Input" / "ISIC_0000005.jpg").unlink()
    with pytest.raises(DatasetError, match=r"1 image\(s\) listed in ISIC_2019_Training_GroundTruth\.csv are missing.*ISIC_0000005\.jpg"):
        load_dataset(f"isic2019:{isic_dir}")
    unk = "ISIC_0000001,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,1.0"
    gt.write_text(original.replace("ISIC_0000001,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0", unk))
    with pytest.raises(DatasetError, match=r"line 3 \(ISIC_0000001\): labelled UNK"):
        isic2019.read_labels(isic_dir)
    gt.write_text(original.replace("ISIC_0000001,1.0", "ISIC_0000001,0.5"))
    with pytest.raises(DatasetError, match=r"unknown label value\(s\) \[\('MEL', '0.5'\)\]"):
        isic2019.read_labels(isic_dir)
    gt.write_text(original.replace("image,MEL", "image,Melanoma"))
    with pytest.raises(DatasetError, match=r"missing column\(s\) 'MEL'"):
        isic2019.read_labels(isic_dir)
    gt.unlink()
    with pytest.raises(DatasetError, match=r"ISIC_2019_Training_GroundTruth\.csv not found: the ISIC 2019 training download"):
        load_dataset(f"isic2019:{isic_dir}")
    with pytest.raises(DatasetError, match=r"grouping='patient'; use lesion"):
        load_dataset(f"isic2019:{isic_dir}?grouping=patient")


def test_real_isic2019_labels_and_lesion_groups() -> None:
    root = shared_file("isic2019/ISIC_2019_Training_GroundTruth.csv").parent
    shared_file("isic2019/ISIC_2019_Training_Metadata.csv")
    ids, labels, groups = isic2019.read_labels(root)
    assert len(ids) == 25_331 and len(set(ids)) == 25_331
    assert np.bincount(labels, minlength=8).tolist() == [4522, 12875, 3323, 867, 2624, 239, 253, 628]  # no UNK
    assert sum(i.endswith("_downsampled") for i in ids) == 2074
    assert groups is not None
    counts = Counter(groups)
    assert sum(1 for g in counts if g.startswith("image:")) == 2084  # images without a lesion_id
    assert sum(1 for g in counts if g.startswith("lesion:")) == 11_847 and max(counts.values()) == 31
    assignment = grouped_stratified_split(labels, groups, isic2019.FRACTIONS, seed=0)
    where: dict[str, int] = {}
    assert all(where.setdefault(g, int(a)) == a for g, a in zip(groups, assignment, strict=True))
    assert np.allclose(np.bincount(assignment) / len(ids), [0.8, 0.1, 0.1], atol=0.01)


def test_real_isic2019_lesion_split_is_not_biased_by_group_size() -> None:
    # Version 1 (largest groups first): single-image lesions were 24% of train but 80% of val/test, and
    # `_downsampled` images 5% vs 20%, so the test set came from another source mix than train.
    root = shared_file("isic2019/ISIC_2019_Training_GroundTruth.csv").parent
    shared_file("isic2019/ISIC_2019_Training_Metadata.csv")
    ids, labels, groups = isic2019.read_labels(root)
    assert groups is not None
    assignment = grouped_stratified_split(labels, groups, isic2019.FRACTIONS, seed=0)
    size = Counter(groups)
    group_size = np.asarray([size[g] for g in groups])
    downsampled = np.asarray([i.endswith("_downsampled") for i in ids])

    def figures(members: np.ndarray) -> dict[str, float]:
        placed = {g for g, m in zip(groups, members, strict=True) if m}
        return {
            "singleton share": float(np.mean(group_size[members] == 1)),
            "mean group size": float(np.mean([size[g] for g in placed])),
            "image's group size": float(np.mean(group_size[members])),  # the 4.0 (train) vs 1.2
            "downsampled share": float(np.mean(downsampled[members])),
        }

    whole = figures(np.ones(len(ids), dtype=bool))
    tolerance = {"singleton share": 0.05, "mean group size": 0.5, "image's group size": 0.5, "downsampled share": 0.05}
    classes = np.bincount(labels, minlength=8) / len(labels)
    for split, fraction in enumerate(isic2019.FRACTIONS):
        members = assignment == split
        assert abs(members.mean() - fraction) < 0.02, split
        for name, value in figures(members).items():
            assert abs(value - whole[name]) < tolerance[name], (split, name, value, whole[name])
        assert np.abs(np.bincount(labels[members], minlength=8) / members.sum() - classes).max() < 0.03, split
    assert group_conflict(groups, assignment) is None  # no lesion in two splits
