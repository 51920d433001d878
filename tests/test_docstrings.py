"""The public API's docstrings are numpy-style: every name in ``fmprobe._LAZY`` from a documented module has a
summary, ``Parameters`` naming every parameter of its signature (``Attributes`` naming every field, for records
and enums), ``Returns`` for functions and ``Examples``; and the examples that are not skipped run.

Extend ``DOCUMENTED_MODULES`` (the modules ``_LAZY`` maps names to) as more of the API is documented.
"""

from __future__ import annotations

import dataclasses
import doctest
import enum
import inspect
import re
import sys

import pytest

import fmprobe

DOCUMENTED_MODULES = [
    "fmprobe.datasets",
    "fmprobe.store",
    "fmprobe.store.export",
    "fmprobe.report",
    "fmprobe.report.recommend",
    "fmprobe.results",
    "fmprobe.finetune",
    "fmprobe.demo",
    "fmprobe.backbones",
    "fmprobe.backbones.catalog",
    "fmprobe.probes",
    "fmprobe.extract",
    "fmprobe.runtime",
    "fmprobe.probing",
    "fmprobe.study",
]

NAMES = sorted(name for name, module in fmprobe._LAZY.items() if module in DOCUMENTED_MODULES)
SECTION = re.compile(r"^([A-Z][A-Za-z ]+)\n-{3,}$", re.MULTILINE)


def sections(doc: str) -> dict[str, str]:
    """Section title -> its text, for a numpy-style docstring (the summary is under "")."""
    parts = SECTION.split(doc)
    found = {"": parts[0]}
    found.update({title: text for title, text in zip(parts[1::2], parts[2::2], strict=True)})
    return found


def parameters(obj: object) -> list[str]:
    """The public parameter names of a callable's signature (``self`` and ``_private`` ones left out)."""
    return [p for p in inspect.signature(obj).parameters if p != "self" and not p.startswith("_")]


def problems(obj: object, what: str) -> list[str]:
    """What a public function's (or class's) docstring lacks."""
    doc = inspect.getdoc(obj) or ""
    found = sections(doc)
    out = [] if found[""].strip() else [f"{what}: no summary line"]
    out += [f"{what}: no Examples section"] if "Examples" not in found or ">>>" not in found["Examples"] else []
    if isinstance(obj, type) and issubclass(obj, enum.Enum):
        names, where = [m.name for m in obj], "Attributes"
    elif dataclasses.is_dataclass(obj):
        names, where = [f.name for f in dataclasses.fields(obj) if f.init and not f.name.startswith("_")], "Attributes"
    else:
        names, where = parameters(obj), "Parameters"
        if not isinstance(obj, type) and "Returns" not in found:
            out.append(f"{what}: no Returns section")
    if names and where not in found:
        return out + [f"{what}: no {where} section"]
    text = found.get(where, "")
    out += [f"{what}: {where} does not name {n!r}" for n in names if not re.search(rf"\b{re.escape(n)}\b", text)]
    return out


def public_methods(cls: type) -> list[tuple[str, object]]:
    """The methods a plain class defines itself (records and enums: their fields are the documentation)."""
    if dataclasses.is_dataclass(cls) or issubclass(cls, enum.Enum):
        return []
    return [(n, v) for n, v in vars(cls).items() if not n.startswith("_") and inspect.isfunction(v)]


def test_the_checked_names_cover_every_documented_module() -> None:
    assert {fmprobe._LAZY[name] for name in NAMES} == set(DOCUMENTED_MODULES)


@pytest.mark.parametrize("name", NAMES)
def test_public_name_has_a_numpy_docstring(name: str) -> None:
    obj = getattr(fmprobe, name)
    found = problems(obj, name)
    if isinstance(obj, type):
        for method, function in public_methods(obj):
            found += problems(function, f"{name}.{method}")
    assert not found, "\n".join(found)


def test_the_checker_finds_what_a_docstring_lacks() -> None:
    def undocumented(path: str, out: str | None = None) -> int:
        """Does something.

        Parameters
        ----------
        path : str
            A path.
        """
        return 0

    assert problems(undocumented, "f") == [
        "f: no Examples section",
        "f: no Returns section",
        "f: Parameters does not name 'out'",
    ]


@pytest.mark.parametrize("name", NAMES)
def test_examples_that_are_not_skipped_run(name: str, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # an example that writes, writes here
    obj = getattr(fmprobe, name)
    module = sys.modules[obj.__module__]
    finder = doctest.DocTestFinder(recurse=isinstance(obj, type))
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(obj, name, module=module, globs=vars(module).copy()):
        runner.run(test)
    assert runner.failures == 0, f"{runner.failures} failing example(s) in {name}'s docstring (see the output above)"
