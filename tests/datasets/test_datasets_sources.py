"""Dataset sources: spec parsing, declared options, hints derived from the SOURCES records."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from _helpers import make_images, write_manifest
from typer.testing import CliRunner

from fmprobe.datasets import (
    SOURCES,
    Dataset,
    DatasetSource,
    OptionSpec,
    Split,
    describe_sources,
    load_dataset,
    parse_spec,
)
from fmprobe.datasets.base import ArraySource
from fmprobe.errors import DatasetError, UnknownNameError
from fmprobe.tasks import SPLIT_NAMES


def test_unknown_source_suggests_closest() -> None:
    with pytest.raises(UnknownNameError, match="Closest: medmnist"):
        parse_spec("medmnst:pathmnist")
    with pytest.raises(DatasetError, match="unknown option"):
        load_dataset("demo:12?colour=red")


def test_a_bare_folder_is_not_guessed(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="write folder:"):
        load_dataset(str(tmp_path))


# ------------------------------------------------ a new source: one small loader plus one SOURCES.add line


def load_tiny(argument: str, spec: str, size: int = 4) -> Dataset:
    """Three splits of ``size`` black 8x8 images, alternating labels."""
    images = np.zeros((size, 8, 8), np.uint8)
    labels = np.arange(size) % 2
    splits = {
        name: Split(name, tuple(f"{name}/{i}" for i in range(size)), labels, ArraySource(images, name))
        for name in SPLIT_NAMES
    }
    return Dataset("tiny", spec, "binary", ("a", "b"), splits, content_digest=f"tiny{size}")


@pytest.fixture
def tiny_source() -> Iterator[DatasetSource]:
    source = SOURCES.add(
        DatasetSource("tiny", load_tiny, False, "tiny?size=6", "eight-pixel test images", (OptionSpec("size", 4, "images per split", int),))
    )
    yield source
    SOURCES.remove("tiny")


def test_a_registered_source_loads_lists_and_checks_its_options(tiny_source: DatasetSource) -> None:
    assert {k: len(v) for k, v in load_dataset("tiny?size=6").splits.items()} == {"train": 6, "val": 6, "test": 6}
    assert len(load_dataset("tiny").splits["test"]) == 4  # the declared default
    assert load_dataset("tiny:?size=3", max_images=2).num_images == 6
    listed = {row["name"]: row for row in describe_sources()}["tiny"]
    assert listed["takes_path"] is False and listed["example"] == "tiny?size=6"
    assert listed["options"] == [{"name": "size", "values": "N", "default": 4, "help": "images per split"}]
    with pytest.raises(DatasetError, match=r"unknown option\(s\) \['colour'\]; tiny takes: size"):
        load_dataset("tiny?colour=red")
    with pytest.raises(DatasetError, match=r"size='many' is not an integer"):
        load_dataset("tiny?size=many")
    with pytest.raises(UnknownNameError, match=r"Closest: tiny\..*tiny\?size=6"):  # hints list every example
        load_dataset("tinny:x")


def test_a_removed_source_is_unknown_again(tiny_source: DatasetSource) -> None:
    SOURCES.remove("tiny")
    with pytest.raises(UnknownNameError):
        load_dataset("tiny")
    SOURCES.add(tiny_source)  # the fixture removes it again


@pytest.mark.parametrize(
    "change, message",
    [
        ({"loader": lambda argument, spec: None}, "loader cannot be called"),
        ({"example": "demo:5"}, "does not name this source"),
        ({"example": "tiny?size=lots"}, "is not an integer"),
        ({"example": "tiny?colour=red"}, r"unknown option\(s\) \['colour'\]"),
        ({"description": "two\nlines"}, "one-line description"),
        ({"takes_path": True, "example": "tiny:"}, "gives no path"),
        ({"suffixes": ("npz",)}, "start with '.'"),
        ({"name": "Tiny Set"}, "lower-case"),
    ],
)
def test_a_source_record_checks_itself(change: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {
        "name": "tiny", "loader": load_tiny, "takes_path": False, "example": "tiny", "description": "test images",
        "options": (OptionSpec("size", 4, "images per split", int),),
    }  # fmt: skip
    with pytest.raises(ValueError, match=message):
        DatasetSource(**(fields | change))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"name": "size", "default": 4, "help": ""}, "one-line help"),
        ({"name": "mode", "default": "c", "help": "h", "choices": ("a", "b")}, "default 'c' is not a valid value"),
        ({"name": "size", "default": "4", "help": "h", "kind": int}, "default '4' is not a valid value"),
        ({"name": "pair", "default": None, "help": "h", "kind": lambda text: text}, "needs a form"),
    ],
)
def test_an_option_spec_checks_itself(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        OptionSpec(**fields)  # type: ignore[arg-type]


def test_registering_a_clashing_source_is_refused(tiny_source: DatasetSource) -> None:
    with pytest.raises(ValueError, match="registered twice"):
        SOURCES.add(tiny_source)
    other = DatasetSource("arrays", load_tiny, True, "arrays:x.npz", "more arrays", suffixes=(".npz",))
    with pytest.raises(ValueError, match=r"suffix \.npz \(already npz\)"):
        SOURCES.add(other)
    assert "arrays" not in SOURCES


def test_option_kinds_parse_and_name_the_fix() -> None:
    frontal = OptionSpec("frontal", False, "frontal views only", bool)
    assert [frontal.parse("s", t) for t in ("1", "yes", "True", "0", "no")] == [True, True, True, False, False]
    with pytest.raises(DatasetError, match=r"dataset spec 's': frontal='maybe'; use frontal=1 \(frontal views only\) or 0"):
        frontal.parse("s", "maybe")
    mode = OptionSpec("mode", "a", "h", choices=("a", "b"))
    with pytest.raises(DatasetError, match="mode='c'; use one of a, b"):
        mode.parse("s", "c")
    assert OptionSpec("mode", "a", "h", choices=("a", "b"), hint="use a (fast) or b").values == "a|b"


# ------------------------------------------------ the registered sources


def test_every_path_source_asks_for_its_path() -> None:
    path_sources = [name for name, source in SOURCES.items() if source.takes_path]
    assert path_sources and "demo" not in path_sources and "medmnist" not in path_sources
    for name in path_sources:
        with pytest.raises(DatasetError, match=rf"give the path after '{name}:', e\.g\. "):
            load_dataset(f"{name}:")
        with pytest.raises(DatasetError, match="give the path"):
            load_dataset(name)  # a bare source name is that source, without a path


def test_every_registered_example_names_its_source() -> None:
    for row in describe_sources():
        assert parse_spec(str(row["example"]))[0] == row["name"]
        assert row["description"] and all(o["help"] for o in row["options"])  # type: ignore[attr-defined]


def test_sources_that_take_no_options_refuse_them_by_name(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"unknown option\(s\) \['size'\]; medmnist takes no options"):
        load_dataset("medmnist:pneumoniamnist?size=224")  # refused before any file is looked up
    with pytest.raises(DatasetError, match=r"unknown option\(s\) \['seed'\]; npz takes: num_classes"):
        load_dataset(f"{tmp_path / 'x.npz'}?seed=1")


def test_bare_paths_name_their_source_by_suffix(tmp_path: Path) -> None:
    assert parse_spec(f"{tmp_path}/a.NPZ") == ("npz", f"{tmp_path}/a.NPZ", {})
    assert parse_spec("data/m.csv?task=ordinal") == ("csv", "data/m.csv", {"task": "ordinal"})
    assert parse_spec("demo?seed=2") == ("demo", "", {"seed": "2"})
    with pytest.raises(DatasetError, match="empty dataset spec; use e.g. demo"):
        parse_spec("  ")


def test_fmprobe_datasets_prints_every_source_and_option() -> None:
    from fmprobe.cli import app

    result = CliRunner().invoke(app, ["datasets"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for row in describe_sources():
        assert any(line.startswith(f"{row['name']} ") and str(row["example"]) in line for line in lines)
    assert any(line.split()[:3] == ["chexpert", "frontal=1|0", "0"] for line in lines)
    assert any(line.split()[:3] == ["isic2019", "grouping=lesion|none", "lesion"] for line in lines)


def test_a_path_source_names_its_dataset_by_location_and_options(tmp_path: Path, tiny_source: DatasetSource) -> None:
    def load_at(path: Path, spec: str, size: int = 4) -> Dataset:
        return load_tiny(str(path), spec, size)

    option = OptionSpec("size", 4, "images per split", int)
    SOURCES.add(DatasetSource("tinypath", load_at, True, "tinypath:x?size=6", "tiny images at a path", (option,)))
    try:
        for site in ("siteA", "siteB"):
            (tmp_path / site / "images").mkdir(parents=True)
        a, b = (load_dataset(f"tinypath:{tmp_path / s / 'images'}").name for s in ("siteA", "siteB"))
        assert a != b and a.startswith("tiny-") and len(a) == len("tiny-") + 6
        assert load_dataset(f"tinypath:{tmp_path / 'siteB' / '..' / 'siteA' / 'images'}?size=4").name == a
        assert load_dataset(f"tinypath:{tmp_path / 'siteA' / 'images'}?size=6").name != a
    finally:
        SOURCES.remove("tinypath")
    assert load_dataset("tiny").name == "tiny"  # a source without a path keeps its name


# ------------------------------------------------ variants: every data-changing option off its default is in the name


def load_variant(argument: str, spec: str, size: int = 4, balanced: bool = False, order: tuple[str, ...] = (), note: str = "") -> Dataset:
    return load_tiny(argument, spec, size)


VARIANT_OPTIONS = (
    OptionSpec("size", 4, "images per split", int),
    OptionSpec("balanced", False, "a bool option", bool),
    OptionSpec("order", (), "a parsed option", lambda text: tuple(text.split(",")), form="A,B"),
    OptionSpec("note", "", "a label that leaves the data as it is", changes_data=False),
)


@pytest.fixture
def variant_sources() -> Iterator[None]:
    SOURCES.add(DatasetSource("tinyvar", load_variant, False, "tinyvar?size=6", "variant test images", VARIANT_OPTIONS))
    SOURCES.add(DatasetSource("tinyvarpath", lambda path, spec, **o: load_variant(str(path), spec, **o), True,
                              "tinyvarpath:x?size=6", "variant test images at a path", VARIANT_OPTIONS))  # fmt: skip
    yield
    SOURCES.remove("tinyvar")
    SOURCES.remove("tinyvarpath")


def test_a_variant_is_named_by_the_options_that_change_its_data(tmp_path: Path, variant_sources: None) -> None:
    assert load_dataset("tinyvar").name == "tiny"  # the default variant keeps its plain name
    assert load_dataset("tinyvar?size=4&note=x").name == "tiny"  # a default value, or an option that changes no data
    assert load_dataset("tinyvar?order=b,a&size=6&balanced=yes").name == "tiny[size=6,balanced=1,order=b,a]"
    assert load_dataset("tinyvar?size=6", max_images=2).name == "tiny[size=6,max_images_per_split=2]"
    assert load_dataset("tinyvar", max_images_per_split=2).name == "tiny[max_images_per_split=2]"

    at = f"tinyvarpath:{tmp_path}"
    plain = load_dataset(at).name
    assert re.fullmatch(r"tiny-[0-9a-f]{6}", plain)
    assert load_dataset(f"{at}?note=x&verify_content=1").name == plain  # neither changes the data
    sized = load_dataset(f"{at}?size=6").name
    assert re.fullmatch(r"tiny\[size=6\]-[0-9a-f]{6}", sized) and sized[-6:] != plain[-6:]  # digest as before
    assert load_dataset(f"{at}?size=6", max_images_per_split=3).name == sized.replace("]", ",max_images_per_split=3]")


def test_an_option_added_later_keeps_the_default_variants_name(tmp_path: Path, variant_sources: None) -> None:
    before = load_dataset(f"tinyvarpath:{tmp_path}").name
    added = OptionSpec("aggregate", "image", "an option added to the source later", choices=("image", "study"), digest_default=False)
    SOURCES.remove("tinyvarpath")
    SOURCES.add(DatasetSource("tinyvarpath", lambda path, spec, aggregate="image", **o: load_variant(str(path), spec, **o), True,
                              "tinyvarpath:x?size=6", "variant test images at a path", (*VARIANT_OPTIONS, added)))  # fmt: skip
    assert load_dataset(f"tinyvarpath:{tmp_path}").name == before
    assert load_dataset(f"tinyvarpath:{tmp_path}?aggregate=image").name == before
    study = load_dataset(f"tinyvarpath:{tmp_path}?aggregate=study").name
    assert study.startswith("tiny[aggregate=study]-") and study[-6:] != before[-6:]


def test_manifest_seeds_are_two_readable_variants(tmp_path: Path) -> None:
    labels = ["a", "b"] * 10
    names = make_images(tmp_path / "site", labels)
    manifest = write_manifest(tmp_path / "site" / "labels.csv", ["path", "label"], [list(r) for r in zip(names, labels, strict=True)])
    zero, explicit_zero, one = (load_dataset(f"csv:{manifest}{q}") for q in ("", "?seed=0", "?seed=1"))
    assert zero.name == explicit_zero.name and re.fullmatch(r"labels-[0-9a-f]{6}", zero.name)
    assert re.fullmatch(r"labels\[seed=1\]-[0-9a-f]{6}", one.name)
    assert zero.splits["test"].ids != one.splits["test"].ids  # they are different data: they must not pool
