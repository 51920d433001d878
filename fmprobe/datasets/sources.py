"""The record of one dataset source, and the registry of them.

Every fact about a source is data in its :class:`DatasetSource`: the loader, whether its argument is a path,
its ``?key=value`` options (kind, default, help: checked once, here), an example spec and a one-line
description. Everything else is derived from the records: spec parsing (which source a spec names), the
option checks and their errors, the "unknown source" hints, :func:`describe_sources` and ``fmprobe datasets``,
and the study's set of sources whose argument is a relative path to resolve.

A record checks itself when it is built and again when it is registered (its example must parse back to it),
so a source that forgets its help, declares an option its loader does not take, or ships a broken example
fails at import time, not in a user's run.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

from fmprobe.datasets.base import Dataset, with_verified_content
from fmprobe.errors import DatasetError, UnknownNameError
from fmprobe.registry import Registry
from fmprobe.tasks import TASK_TYPES

Loader = Callable[..., Dataset]
BOOLEANS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
LIST_HINT = "`fmprobe datasets` lists every source with its options."


@dataclass(frozen=True)
class OptionSpec:
    """One ``?name=value`` option of a source.

    ``kind`` is ``int``, ``bool`` (1/0, true/false, yes/no), ``str`` (with ``choices``: one of them) or a
    parser ``text -> value`` that raises :class:`DatasetError` itself. ``default`` is what the loader gets
    when the spec leaves the option out (``None``: the loader decides, as ``help`` says). ``hint`` replaces
    "use one of ..." in the error for a bad choice; ``form`` names a parser's value in listings (``LOW,HIGH``).

    An option names a *variant* of the dataset: set to anything but its default it is shown in the dataset's
    name (``chexpert[uncertain=ignore]-3f2a9c``), so two variants never share a features folder or a report
    row. ``changes_data=False`` declares an option that leaves labels, samples, split and pixels as they are
    (``verify_content``): it stays out of the name. ``digest_default=False`` is for an option added to a
    source after its datasets were first named: at its default it stays out of the name's digest, so existing
    caches of the default variant keep their names (an option set to another value always enters it).
    """

    name: str
    default: object
    help: str
    kind: type | Callable[[str], object] = str
    choices: tuple[str, ...] = ()
    hint: str = ""
    form: str = ""
    changes_data: bool = True
    digest_default: bool = True

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.name):
            raise ValueError(f"option name {self.name!r}: use lower-case letters, digits and '_'")
        if not self.help or "\n" in self.help:
            raise ValueError(f"option {self.name!r}: give it a one-line help")
        if self.choices and self.kind is not str:
            raise ValueError(f"option {self.name!r}: choices need kind=str")
        if not (self.kind in (int, bool, str) or callable(self.kind)):
            raise ValueError(f"option {self.name!r}: kind must be int, bool, str or a parser function")
        if self.kind not in (int, bool, str) and not self.form:
            raise ValueError(f"option {self.name!r}: a parser option needs a form (e.g. 'LOW,HIGH') for listings")
        valid = {int: int, bool: bool, str: str}.get(self.kind)  # type: ignore[call-overload]
        if self.default is not None and (
            (self.choices and self.default not in self.choices) or (valid and type(self.default) is not valid)
        ):
            raise ValueError(f"option {self.name!r}: default {self.default!r} is not a valid value")

    @property
    def values(self) -> str:
        """The accepted values, as ``fmprobe datasets`` shows them."""
        if self.choices:
            return "|".join(self.choices)
        return self.form or {int: "N", bool: "1|0", str: "TEXT"}[self.kind]  # type: ignore[index]

    def show(self, value: object) -> str:
        """``value`` as it reads in a variant's name: what ``name=...`` in a spec would say (bools as 1/0)."""
        if isinstance(value, bool):
            return "1" if value else "0"
        if isinstance(value, (tuple, list)):
            return ",".join(map(str, value))
        return str(value)

    def parse(self, spec: str, text: str) -> object:
        """The value of ``name=text`` in ``spec``, or a DatasetError naming the spec, the option and the fix."""
        if self.kind is int:
            try:
                return int(text)
            except ValueError:
                raise DatasetError(f"dataset spec {spec!r}: {self.name}={text!r} is not an integer.") from None
        if self.kind is bool:
            if text.lower() not in BOOLEANS:
                raise DatasetError(f"dataset spec {spec!r}: {self.name}={text!r}; use {self.name}=1 ({self.help}) or 0.")
            return BOOLEANS[text.lower()]
        if self.choices and text not in self.choices:
            use = self.hint or "use one of " + ", ".join(self.choices)
            raise DatasetError(f"dataset spec {spec!r}: {self.name}={text!r}; {use}.")
        return text if self.kind is str else self.kind(text)  # type: ignore[operator]


def parse_query(query: str) -> dict[str, str]:
    """``key=value&...`` as a dict. ``%XX`` escapes are decoded (``%26`` is a literal ``&``) but ``+`` stays a
    plus, not a space: option values are regexes (``group=^(patient\\d+)_``) and lists, never form-encoded text."""
    return dict(parse_qsl(query.replace("+", "%2B"), keep_blank_values=True, strict_parsing=bool(query)))


# Options several sources share, declared once.
SEED = OptionSpec("seed", 0, "seed of the drawn split (saved beside the data, so every run sees the same one)", int)
TASK = OptionSpec("task", None, "task type instead of the inferred one (e.g. ordinal for graded labels)", choices=TASK_TYPES)
# Where a drawn split is saved (a default in the data folder travels with the data); added after names existed.
SPLIT_FILE = OptionSpec(
    "split_file", None, "where the drawn split is saved and read (relative: to the data folder); default: beside the data",
    digest_default=False,
)
# Every path source takes it; applied to the loaded dataset (never passed to the loader).
VERIFY_CONTENT = OptionSpec(
    "verify_content", False, "hash every image file's bytes into the cache key, not only size and mtime (reads all)", bool,
    changes_data=False,
)


@dataclass(frozen=True)
class DatasetSource:
    """One dataset source: ``loader(argument, spec, **options) -> Dataset``.

    With ``takes_path`` the argument after ``name:`` is a file or folder: the loader gets it as a ``Path``
    (never empty), and the study resolves it against the study file's folder. ``suffixes`` lets a bare path
    name the source (``data/x.npz``). ``example`` is a working spec; ``description`` one line for listings.
    """

    name: str
    loader: Loader
    takes_path: bool
    example: str
    description: str
    options: tuple[OptionSpec, ...] = ()
    suffixes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9-]*", self.name):
            raise ValueError(f"dataset source name {self.name!r}: use lower-case letters, digits and '-'")
        if not self.description or "\n" in self.description:
            raise ValueError(f"dataset source {self.name!r}: give it a one-line description")
        names = [o.name for o in self.options]
        if len(set(names)) != len(names):
            raise ValueError(f"dataset source {self.name!r}: an option is declared twice ({names})")
        if any(not s.startswith(".") or s != s.lower() for s in self.suffixes):
            raise ValueError(f"dataset source {self.name!r}: suffixes are lower-case and start with '.' ({self.suffixes})")
        try:
            inspect.signature(self.loader).bind("argument", "spec", **{o.name: o.default for o in self.options})
        except TypeError as err:
            raise ValueError(
                f"dataset source {self.name!r}: its loader cannot be called as loader(argument, spec, "
                f"{', '.join(f'{n}=...' for n in names)}) ({err})"
            ) from None
        self._check_example()

    def _check_example(self) -> None:
        body, _, query = self.example.partition("?")
        source, sep, argument = body.partition(":")
        bare = any(body.lower().endswith(s) for s in self.suffixes)
        if not (bare or (sep and source == self.name) or (body == self.name and not self.takes_path)):
            raise ValueError(f"dataset source {self.name!r}: example {self.example!r} does not name this source")
        if self.takes_path and not (argument or bare):
            raise ValueError(f"dataset source {self.name!r}: example {self.example!r} gives no path")
        try:
            self.read_options(self.example, parse_query(query))
        except (DatasetError, ValueError) as err:
            raise ValueError(f"dataset source {self.name!r}: example {self.example!r}: {err}") from None

    @property
    def all_options(self) -> tuple[OptionSpec, ...]:
        """The source's own options, and ``verify_content`` for path sources."""
        return self.options + ((VERIFY_CONTENT,) if self.takes_path else ())

    def read_options(self, spec: str, given: dict[str, str]) -> dict[str, object]:
        """Every declared option's value (parsed, or its default); unknown options are refused by name."""
        declared = {o.name: o for o in self.all_options}
        unknown = sorted(set(given) - set(declared))
        if unknown:
            takes = f"takes: {', '.join(declared)}" if declared else "takes no options"
            raise DatasetError(f"dataset spec {spec!r}: unknown option(s) {unknown}; {self.name} {takes}. {LIST_HINT}")
        return {n: (o.parse(spec, given[n]) if n in given else o.default) for n, o in declared.items()}

    def variant(self, values: dict[str, object]) -> dict[str, str]:
        """The options of ``values`` (from :meth:`read_options`) that make a variant: those that change the data
        and differ from their default, in declaration order, as their names show them (:func:`variant_label`)."""
        return {
            o.name: o.show(values[o.name])
            for o in self.all_options
            if o.changes_data and o.name in values and values[o.name] != o.default
        }

    def digest_settings(self, values: dict[str, object]) -> list[tuple[str, str]]:
        """The (option, value) pairs a path dataset's name digest covers: every data-changing option of the source
        with its value, defaults included (the names of existing caches), except a ``digest_default=False``
        option left at its default."""
        return sorted(
            (o.name, str(values[o.name]))
            for o in self.options
            if o.changes_data and (o.digest_default or values[o.name] != o.default)
        )

    def load(self, argument: str, spec: str, given: dict[str, str]) -> Dataset:
        """Check the options, then call the loader (with the argument as a Path for path sources)."""
        options = self.read_options(spec, given)
        if not self.takes_path:
            return self.loader(argument, spec, **options)
        if not argument:
            raise DatasetError(
                f"dataset spec {spec!r}: give the path after '{self.name}:', e.g. {self.example} ({self.description})."
            )
        verify = options.pop(VERIFY_CONTENT.name)
        dataset = self.loader(Path(argument), spec, **options)
        return with_verified_content(dataset) if verify else dataset

    def describe(self) -> dict[str, object]:
        """This record as plain data (``describe_sources``, ``fmprobe datasets``)."""
        return {
            "name": self.name,
            "takes_path": self.takes_path,
            "example": self.example,
            "description": self.description,
            "suffixes": list(self.suffixes),
            "options": [
                {"name": o.name, "values": o.values, "default": o.default, "help": o.help} for o in self.all_options
            ],
        }


def variant_label(variant: dict[str, str]) -> str:
    """``[key=value,...]`` for a variant's options, ``''`` for the default variant (its name stays plain)."""
    return "[" + ",".join(f"{k}={v}" for k, v in variant.items()) + "]" if variant else ""


class SourceRegistry(Registry[DatasetSource]):
    """The dataset sources by name; ``add(record)`` registers one after checking its example resolves to it."""

    def __init__(self) -> None:
        super().__init__("dataset source")

    def add(self, source: DatasetSource) -> DatasetSource:  # type: ignore[override]
        """Register ``source``; one line per source in ``fmprobe/datasets/__init__.py``."""
        taken = {s: other.name for other in self._entries.values() for s in other.suffixes}
        clash = [f"{s} (already {taken[s]})" for s in source.suffixes if s in taken]
        if clash:
            raise ValueError(f"dataset source {source.name!r}: suffix {', '.join(clash)}")
        super().add(source.name, source)
        if self.parse(source.example)[0] != source.name:
            self.remove(source.name)
            raise ValueError(f"dataset source {source.name!r}: its example {source.example!r} names another source")
        return source

    def unknown(self, name: str, extra_choices: list[str] | None = None) -> UnknownNameError:
        examples = ", ".join(s.example for s in self._entries.values())
        self.list_hint = f"Dataset specs look like {examples}. {LIST_HINT}"  # derived each time: sources may be added
        return super().unknown(name, extra_choices)

    def parse(self, spec: str) -> tuple[str, str, dict[str, str]]:
        """Split ``source:argument?options`` into its parts. A bare source name with no argument names that
        source (``demo``); a bare path names the source registered for its suffix (``x.npz``, ``x.csv``)."""
        spec = spec.strip()
        if not spec:
            raise DatasetError(f"empty dataset spec; use e.g. {self._examples(3)}. {LIST_HINT}")
        body, _, query = spec.partition("?")
        try:
            options = parse_query(query)
        except ValueError:
            raise DatasetError(f"dataset spec {spec!r}: cannot read the options after '?'; write key=value&key=value.") from None
        source, sep, argument = body.partition(":")
        if sep and source in self:
            return source, argument, options
        if not sep and body in self:
            return body, "", options
        lower = body.lower()
        for name, record in self.items():
            if any(lower.endswith(s) for s in record.suffixes):
                return name, body, options
        if Path(body).is_dir():  # never guess: scanning an arbitrary folder tree (".", "/") could take hours
            raise DatasetError(f"dataset spec {spec!r} is a folder; write folder:{body} for an ImageFolder layout.")
        raise self.unknown(source if sep else body)

    def _examples(self, n: int) -> str:
        return ", ".join(s.example for s in list(self._entries.values())[:n])

    def describe(self) -> list[dict[str, object]]:
        return [source.describe() for source in self._entries.values()]


SOURCES = SourceRegistry()
