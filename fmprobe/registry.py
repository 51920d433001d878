"""A small name -> entry registry with close-match suggestions (the timm registry idea, minus the magic)."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from fmprobe.errors import UnknownNameError

T = TypeVar("T")


def closest(name: str, choices: list[str], n: int = 3) -> list[str]:
    """Names in ``choices`` most similar to ``name``, best first (prefix matches count as close, and so does a
    shared first syllable: ``logistic`` -> ``logreg``)."""
    matches = difflib.get_close_matches(name, choices, n=n, cutoff=0.5)
    stem, start = name.split("_")[0], name[:3].lower()
    prefix = [c for c in sorted(choices) if (c.startswith(stem) or (len(start) == 3 and c[:3].lower() == start)) and c not in matches]
    return (matches + prefix)[:n]


def unknown_message(kind: str, name: str, choices: list[str], hint: str = "") -> str:
    """"unknown KIND 'name'. Closest: ..." (or the first known names), then ``hint``: the one wording of it."""
    near = closest(name, choices)
    msg = f"unknown {kind} {name!r}."
    if near:  # a short registry without a hint of its own lists its names in the same sentence
        short = len(choices) <= 12 and not hint
        msg += f" Closest: {', '.join(near)}" + (f"; known: {', '.join(sorted(choices))}." if short else ".")
    else:
        msg += f" Known: {', '.join(sorted(choices)[:12])}{' …' if len(choices) > 12 else ''}."
    return f"{msg} {hint}" if hint else msg


class Registry(Generic[T]):
    """Maps names to entries of one kind (``kind`` appears in error messages, e.g. 'backbone')."""

    def __init__(self, kind: str, list_hint: str = "") -> None:
        self.kind = kind
        self.list_hint = list_hint
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form: ``@REGISTRY.register("name")``."""

        def wrap(entry: T) -> T:
            return self.add(name, entry)

        return wrap

    def remove(self, name: str) -> T:
        """Unregister ``name`` (tests, plugins replacing an entry); an unknown name raises the usual error."""
        entry = self.get(name)
        del self._entries[name]
        return entry

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise self.unknown(name) from None

    def unknown(self, name: str, extra_choices: list[str] | None = None) -> UnknownNameError:
        return UnknownNameError(unknown_message(self.kind, name, list(self._entries) + list(extra_choices or []), self.list_hint))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())
