"""CheXpert in its Stanford layout: uncertainty policies, frontal-only views, the patient-grouped carve of
validation, named errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _datasets_layouts import groups_disjoint, write_csv
from _helpers import write_png

from fmprobe.datasets import chexpert, load_dataset
from fmprobe.errors import DatasetError

OBS = list(chexpert.OBSERVATIONS)
CHEX_HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA"] + OBS


def _chex_row(split: str, patient: int, view: str, values: dict[str, str]) -> list[str]:
    name = "view1_frontal.jpg" if view == "Frontal" else "view2_lateral.jpg"
    path = f"CheXpert-v1.0-small/{split}/patient{patient:05d}/study1/{name}"
    return [path, "Female", "60", view, "AP" if view == "Frontal" else ""] + [values.get(o, "") for o in OBS]


@pytest.fixture
def chexpert_dir(tmp_path: Path) -> Path:
    root = tmp_path / "renamed-chexpert"  # Path values keep 'CheXpert-v1.0-small/': the first component is replaced
    train, valid = [], []
    for p in range(1, 25):
        values = {"No Finding": "1.0"} if p % 3 else {"Edema": "1.0", "Support Devices": "-1.0", "Fracture": "0.0"}
        if p == 2:
            values = {"Atelectasis": "-1.0", "Pneumonia": "-1.0", "No Finding": ""}
        train += [_chex_row("train", p, "Frontal", values), _chex_row("train", p, "Lateral", values)]
    for p in range(64541, 64544):
        valid.append(_chex_row("valid", p, "Frontal", {o: "0.0" for o in OBS} | {"Cardiomegaly": "1.0"}))
    valid.append(_chex_row("valid", 64541, "Lateral", {o: "0.0" for o in OBS}))
    for row in train + valid:
        write_png(root / row[0].split("/", 1)[1], np.full((8, 8), 100, dtype=np.uint8))
    write_csv(root / "train.csv", CHEX_HEADER, train)
    write_csv(root / "valid.csv", CHEX_HEADER, valid)
    return root


def test_chexpert_layout_split_and_policies(chexpert_dir: Path) -> None:
    ds = load_dataset(f"chexpert:{chexpert_dir}")
    assert ds.task == "multilabel" and ds.primary_metric == "roc_auc" and ds.class_names == tuple(OBS)
    assert ds.extra["competition_labels"] == ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
    assert len(ds.splits["test"]) == 4 and len(ds.splits["val"]) >= 2 and len(ds.splits["train"]) + len(ds.splits["val"]) == 48
    assert groups_disjoint(ds, lambda i: i.split("/")[2])
    assert ds.splits["test"].source.load(0).mode == "RGB"
    assert (chexpert_dir / "train.fmprobe_split_v2_seed0_90-10-0.csv").exists()

    def labels_of(spec: str) -> dict[str, np.ndarray]:
        d = load_dataset(spec)
        return {i: lab for s in d.splits.values() for i, lab in zip(s.ids, s.labels, strict=True)}

    key = "CheXpert-v1.0-small/train/patient00002/study1/view1_frontal.jpg"
    atel, pneu, nofind = OBS.index("Atelectasis"), OBS.index("Pneumonia"), OBS.index("No Finding")
    zeros = labels_of(f"chexpert:{chexpert_dir}")[key]
    ones = labels_of(f"chexpert:{chexpert_dir}?uncertain=ones")[key]
    ignore_ds = load_dataset(f"chexpert:{chexpert_dir}?uncertain=ignore")
    ignore = {i: lab for s in ignore_ds.splits.values() for i, lab in zip(s.ids, s.labels, strict=True)}[key]
    assert (zeros[atel], ones[atel], ignore[atel]) == (0, 1, -1) and (ignore[pneu], ones[pneu]) == (-1, 1)
    assert zeros[nofind] == ones[nofind] == ignore[nofind] == 0  # blank = not mentioned = negative
    assert ignore_ds.extra["missing_label"] == -1 and "missing_label" not in ds.extra
    assert len({ds.content_digest, ignore_ds.content_digest}) == 2

    front = load_dataset(f"chexpert:{chexpert_dir}?frontal=1")
    assert all(i.endswith("_frontal.jpg") for s in front.splits.values() for i in s.ids)
    assert len(front.splits["test"]) == 3
    where = {i: n for n, s in ds.splits.items() for i in s.ids}
    assert all(where[i] == n for n, s in front.splits.items() for i in s.ids)  # one carve for every option


def test_chexpert_named_errors(chexpert_dir: Path) -> None:
    train = chexpert_dir / "train.csv"
    original = train.read_text()
    (chexpert_dir / "valid/patient64542/study1/view1_frontal.jpg").unlink()
    with pytest.raises(DatasetError, match=r"1 image\(s\) listed in valid\.csv are missing.*patient64542"):
        load_dataset(f"chexpert:{chexpert_dir}")
    train.write_text(original.replace(",1.0,", ",2.0,", 1))
    with pytest.raises(DatasetError, match=r"train\.csv, line 2: 'No Finding' has value '2.0'"):
        chexpert.read_labels(chexpert_dir)
    train.write_text(original.replace("patient00003", "p3"))
    with pytest.raises(DatasetError, match=r"line 6: Path .* has no patientNNNNN folder"):
        chexpert.read_labels(chexpert_dir)
    train.write_text(original)
    (chexpert_dir / "valid.csv").unlink()
    with pytest.raises(DatasetError, match=r"valid\.csv not found: a CheXpert download"):
        load_dataset(f"chexpert:{chexpert_dir}")
    with pytest.raises(DatasetError, match=r"uncertain='maybe'; use zeros"):
        load_dataset(f"chexpert:{chexpert_dir}?uncertain=maybe")


def test_chexpert_swapped_csvs_are_refused(chexpert_dir: Path) -> None:
    train, valid = chexpert_dir / "train.csv", chexpert_dir / "valid.csv"
    train_text, valid_text = train.read_text(), valid.read_text()
    train.write_text(valid_text)
    valid.write_text(train_text)
    with pytest.raises(DatasetError, match=r"train\.csv: every Path is under valid/ \(e\.g\. line 2: "
                       r"'CheXpert-v1\.0-small/valid/patient64541.*put train\.csv back as valid\.csv"):
        load_dataset(f"chexpert:{chexpert_dir}")
    train.write_text(train_text)
    with pytest.raises(DatasetError, match=r"valid\.csv: every Path is under train/.*put valid\.csv back as train\.csv"):
        load_dataset(f"chexpert:{chexpert_dir}")
    mixed = train_text.replace("small/train/patient00004", "small/valid/patient00004")  # images exist for neither
    valid.write_text(valid_text)
    train.write_text(mixed)
    with pytest.raises(DatasetError, match=r"train\.csv, line 8: Path 'CheXpert-v1\.0-small/valid/patient00004/"
                       r"study1/view1_frontal\.jpg' is not under train/"):
        chexpert.read_labels(chexpert_dir)


def test_chexpert_competition_label_set_and_per_study_option(chexpert_dir: Path) -> None:
    from fmprobe.tasks import STUDY

    image = load_dataset(f"chexpert:{chexpert_dir}")
    assert image.evaluation == {"label_sets": {"competition": list(chexpert.COMPETITION_LABELS)}}
    assert all(name in image.class_names for name in image.evaluation["label_sets"]["competition"])
    assert STUDY not in image.splits["test"].metadata
    study = load_dataset(f"chexpert:{chexpert_dir}?aggregate=study")
    assert study.evaluation["aggregate"] == "study" and study.evaluation["label_sets"] == image.evaluation["label_sets"]
    test = study.splits["test"]
    assert test.metadata[STUDY] == ("patient64541/study1", "patient64542/study1", "patient64543/study1",
                                    "patient64541/study1")  # fmt: skip
    assert test.ids == image.splits["test"].ids and study.content_digest != image.content_digest
    with pytest.raises(DatasetError, match=r"aggregate.*'views'.*image.*study"):
        load_dataset(f"chexpert:{chexpert_dir}?aggregate=views")


def test_chexpert_per_study_needs_study_folders(chexpert_dir: Path) -> None:
    valid = chexpert_dir / "valid.csv"
    valid.write_text(valid.read_text().replace("patient64542/study1/", "patient64542/"))
    (chexpert_dir / "valid/patient64542/study1/view1_frontal.jpg").rename(chexpert_dir / "valid/patient64542/view1_frontal.jpg")
    assert len(load_dataset(f"chexpert:{chexpert_dir}").splits["test"]) == 4  # per image: no study needed
    with pytest.raises(DatasetError, match=r"valid\.csv, line 3: Path .*patient64542/view1.* no patientNNNNN/studyN"):
        load_dataset(f"chexpert:{chexpert_dir}?aggregate=study")
