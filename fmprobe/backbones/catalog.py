"""The backbone catalog: every registered entry as data, read without torch, timm, open_clip or transformers.

``fmprobe models``, :func:`list_models` and :func:`check_backbone_name` (the CLI's check before it imports
torch) read ``catalog.json`` beside this file: per entry its name, family, aliases (upstream names), parameter
count, embedding width per readout, default readout, resolution, and where its weights are published; plus a
snapshot of timm's model names with the timm version it came from, so that an unknown name is refused without
importing timm when the installed timm is that version (else timm itself is asked).

The file is generated, never edited: ``python -m fmprobe.backbones.catalog --rebuild`` builds every entry on the
meta device (shapes only, no weights) and writes it; ``tests/backbones/test_backbones_catalog.py`` rebuilds the
data the same way and compares, so it cannot go stale.

Names resolve here too (:func:`canonical`): a registered name, then an alias, then the ecosystem's forms
(``timm:NAME``, ``hf-hub:ORG/REPO`` / ``hf_hub:``, ``openclip:MODEL:TAG``, ``hf:ORG/REPO``), any timm model name,
and a bare Hugging Face id ``ORG/REPO``, read as ``hf:ORG/REPO`` with one line saying so.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import logging
import sys
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib.metadata import PackageNotFoundError, entry_points, version
from pathlib import Path

from fmprobe.backbones.records import WeightsInfo
from fmprobe.errors import UnknownNameError

log = logging.getLogger("fmprobe.backbones")

DATA = Path(__file__).with_name("catalog.json")
PLUGIN_GROUP = "fmprobe.backbones"  # entry points that register backbones from outside the package
TIMM, HF_HUB, HF_HUB_OLD, OPENCLIP, HF = "timm:", "hf-hub:", "hf_hub:", "openclip:", "hf:"
PREFIXES = (TIMM, HF_HUB, OPENCLIP, HF)  # the generic forms the package itself registers
RUNTIME_PREFIXES: set[str] = set()  # register_prefix adds to it (plugins included)
LIST_HINT = "`fmprobe models` lists all of them; any timm model name, openclip:MODEL:TAG or hf:ORG/REPO works too."
_RUNTIME_ALIASES: dict[str, str] = {}  # alias -> name, from register() (built-in families and plugins)


@dataclass(frozen=True)
class Entry:
    """One registered backbone as data (a row of ``fmprobe models``)."""

    name: str
    family: str
    implementation: str
    aliases: tuple[str, ...]
    params: int | None
    dims: dict[str, int]
    readouts: tuple[str, ...]
    default_readout: str
    readout_patterns: tuple[str, ...]
    resolution: int
    weights: WeightsInfo
    description: str = ""
    paper: str = ""
    imagenet_baseline: bool = False

    @property
    def params_m(self) -> float | None:
        return round(self.params / 1e6, 2) if self.params else None

    @property
    def readouts_text(self) -> str:
        """``cls*=768, mean_patch=768``: each readout's width, the default starred."""
        return ", ".join(f"{r}{'*' if r == self.default_readout else ''}={self.dims.get(r, '?')}" for r in self.readouts)

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name, "family": self.family, "implementation": self.implementation, "aliases": list(self.aliases),
            "params": self.params, "dims": self.dims, "readouts": list(self.readouts), "default_readout": self.default_readout,
            "readout_patterns": list(self.readout_patterns), "resolution": self.resolution, "weights": self.weights.to_dict(),
            "description": self.description, "paper": self.paper, "imagenet_baseline": self.imagenet_baseline,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict) -> Entry:
        tuples = {k: tuple(data[k]) for k in ("aliases", "readouts", "readout_patterns")}
        return cls(**{**data, **tuples, "weights": WeightsInfo.from_dict(data["weights"])})

    def row(self) -> dict[str, object]:
        """What :func:`list_models` returns for this entry (the table's columns and the details)."""
        return {
            "name": self.name, "family": self.family, "implementation": self.implementation, "aliases": list(self.aliases),
            "params_m": self.params_m, "resolution": self.resolution, "readouts": self.readouts_text,
            "dims": dict(self.dims), "default_readout": self.default_readout, "weights": self.weights.describe(),
            "license": self.weights.license, "description": self.description, "paper": self.paper,
        }  # fmt: skip


@cache
def _data() -> dict:
    try:
        return json.loads(DATA.read_text())
    except (OSError, ValueError) as err:  # a broken install; the maintainer command rebuilds it
        raise UnknownNameError(f"{DATA} is missing or damaged ({err}); run `python -m fmprobe.backbones.catalog --rebuild`.") from None


@cache
def entries() -> dict[str, Entry]:
    """The registered entries, in the order `fmprobe models` lists them."""
    return {row["name"]: Entry.from_dict(row) for row in _data()["entries"]}


def aliases() -> dict[str, str]:
    """alias -> registered name (the catalog's, plus those registered at run time)."""
    return {**{a: e.name for e in entries().values() for a in e.aliases}, **_RUNTIME_ALIASES}


def add_aliases(name: str, names: tuple[str, ...]) -> None:
    """Make ``names`` resolve to the entry ``name`` (``register`` calls it)."""
    for alias in names:
        owner = aliases().get(alias, name)
        if owner != name or alias in entries() and alias != name:
            raise ValueError(f"backbone alias {alias!r} of {name!r} is already taken by {owner!r}")
        _RUNTIME_ALIASES[alias] = name
    canonical.cache_clear()  # a name resolved before this registration may now be an alias


def _prefixes() -> tuple[str, ...]:
    return (*PREFIXES, HF_HUB_OLD, *sorted(RUNTIME_PREFIXES - set(PREFIXES)))


def has_prefix(name: str) -> bool:
    """Whether ``name`` is one of the generic forms (``timm:``, ``hf-hub:``, ``openclip:``, ``hf:``, a plugin's)."""
    return name.startswith(_prefixes())


# ---- names ----


@lru_cache(maxsize=256)
def canonical(base: str) -> str:
    """The one name caches and results use for ``base`` (a backbone name without ``:random``): an alias becomes its
    entry, ``hf_hub:`` becomes ``hf-hub:``, ``timm:NAME`` the bare timm name (unless that is an fmprobe name or
    alias), a bare ``ORG/REPO`` becomes ``hf:ORG/REPO``. Says once per process what it assumed."""
    if base in entries() or _live_registered(base):
        return base
    if (target := aliases().get(base)) is not None:
        other = f"; hf:{base} runs transformers' implementation" if _looks_like_hub_id(base) else ""
        log.info(f"backbone {base!r} is the registered {target!r} (an alias: same weights, one cache{other})")
        return target
    if base.startswith(HF_HUB_OLD):
        return canonical(HF_HUB + base[len(HF_HUB_OLD):])
    if base.startswith(TIMM):
        bare = base[len(TIMM):]
        return base if bare in entries() or bare in aliases() else bare
    if _looks_like_hub_id(base):
        log.info(f"backbone {base!r} read as hf:{base} (a Hugging Face model on transformers; write hf:{base} to say so)")
        return HF + base
    return base


def _live_registered(name: str) -> bool:
    """Registered at run time (a plugin, a notebook's ``register``): only known once the registry is imported."""
    core = sys.modules.get("fmprobe.backbones.core")
    return core is not None and name in core.BACKBONES


def _looks_like_hub_id(name: str) -> bool:
    """``ORG/REPO`` with no prefix: one slash, both parts non-empty, no colon."""
    org, slash, repo = name.partition("/")
    plain = bool(slash and org and repo and "/" not in repo and ":" not in name and not has_prefix(name))
    return plain and org not in open_clip_models()  # ViT-B-16/TAG is open_clip's spelling, not a Hub id


def timm_snapshot() -> tuple[str, frozenset[str]]:
    """(timm version, its model names) as the catalog was built."""
    snap = _data()["timm"]
    return str(snap["version"]), frozenset(snap["models"])


def installed_version(distribution: str) -> str | None:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def is_timm_name(name: str) -> bool:
    """``timm.is_model(name)`` (its architecture, before any ``.tag``), from the snapshot when the installed timm is
    the snapshot's version; else from timm itself."""
    snapshot_version, names = timm_snapshot()
    if installed_version("timm") == snapshot_version:
        return name.split(".", 1)[0] in names
    import timm

    return bool(timm.is_model(name))


def timm_names() -> list[str]:
    """timm's model names (from the snapshot when it matches the installed timm)."""
    snapshot_version, names = timm_snapshot()
    if installed_version("timm") == snapshot_version:
        return sorted(names)
    import timm

    return list(timm.list_models())


@cache
def open_clip_models() -> list[str]:
    """open_clip's built-in model names, from its config folder (without importing open_clip)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return []
    folder = Path(next(iter(spec.submodule_search_locations))) / "model_configs"
    return sorted(p.stem for p in folder.glob("*.json"))


def unknown_backbone(base: str, known: list[str] | None = None) -> UnknownNameError:
    """The error for a name nothing resolves: an open_clip model name gets the ``openclip:`` form; otherwise the
    closest names (registered, aliases, ``known``: timm's by default)."""
    if base in open_clip_models() or base.split("/", 1)[0] in open_clip_models():
        model, _, tag = base.partition("/")
        example = next((a for e in entries().values() for a in e.aliases if a.startswith(f"{OPENCLIP}{model}:")), "")
        form = f"{OPENCLIP}{model}:{tag or 'TAG'}"
        return UnknownNameError(
            f"unknown backbone {base!r}: it is an open_clip model name; write {form}"
            f"{f' (e.g. {example})' if example and not tag else ''}. open_clip.list_pretrained_tags_by_model({model!r}) "
            f"lists its tags; `fmprobe models '*{model}*'` the registered ones."
        )
    from fmprobe.registry import unknown_message

    choices = [*entries(), *aliases(), *(timm_names() if known is None else known)]
    return UnknownNameError(unknown_message("backbone", base, choices, LIST_HINT))


def plugins() -> list[object]:
    """The installed ``fmprobe.backbones`` entry points (not loaded)."""
    return list(entry_points(group=PLUGIN_GROUP))


def check_backbone_name(name: str) -> None:
    """Refuse a backbone name nothing would resolve, with the closest names, before torch is imported.

    A typo should fail in a second, not after the seconds torch takes to import or in the middle of a study;
    the CLI calls this on every ``--backbone`` first. Decided from the catalog where it can be (registered
    names, aliases, the generic forms, timm's names when the installed timm matches the snapshot); where it
    cannot (a run-time registration, an installed plugin, another timm version), the full registry decides,
    which imports torch. It checks the name only: whether the weights are on this machine is
    :func:`list_models` ``(available=True)``'s question.

    Parameters
    ----------
    name : str
        A backbone name as :func:`create_backbone` takes it: a registered name or alias (``dinov2_vits14``),
        any timm model name, ``timm:NAME``, ``hf-hub:ORG/REPO``, ``openclip:MODEL:TAG``, ``hf:ORG/REPO``, a bare
        ``ORG/REPO``, each optionally followed by ``:random`` or ``:random:SEED`` (the random-init control).

    Returns
    -------
    None
        The name resolves; nothing is built or downloaded.

    Raises
    ------
    UnknownNameError
        Nothing resolves the name (the message gives the closest names, or the ``openclip:`` form for an
        open_clip model name), an empty generic form such as ``hf:``, or a bad ``:random`` seed.

    Examples
    --------
    >>> from fmprobe import check_backbone_name
    >>> check_backbone_name("dinov2_vits14:random:1")
    >>> check_backbone_name("dinov2_vitz14")
    Traceback (most recent call last):
        ...
    fmprobe.errors.UnknownNameError: unknown backbone 'dinov2_vitz14'. Closest: dinov2_vits14, ...
    """
    from fmprobe.backbones.names import parse_backbone

    base = parse_backbone(name).base  # refuses bad modifiers and seeds
    if base in entries() or base in aliases() or has_prefix(base):
        _check_generic(base)
        return
    if "fmprobe.backbones.core" in sys.modules or plugins():
        from fmprobe.backbones.core import get_spec

        get_spec(base)
        return
    if not is_timm_name(base):
        raise unknown_backbone(base)


def _check_generic(base: str) -> None:
    """The part after a generic prefix must name something (``timm:`` a timm model; the others are read later)."""
    for prefix in PREFIXES:
        if base.startswith(prefix) and not base[len(prefix):].strip(":/"):
            raise UnknownNameError(f"backbone {base!r}: give a name after {prefix!r}, e.g. {_EXAMPLES[prefix]}.")
    if base.startswith(TIMM) and not is_timm_name(base[len(TIMM):]):
        raise unknown_backbone(base[len(TIMM):], timm_names())


_EXAMPLES = {TIMM: "timm:resnet50.a1_in1k", HF_HUB: "hf-hub:timm/vit_base_patch16_224.augreg2_in21k_ft_in1k",
             OPENCLIP: "openclip:ViT-B-16:laion2b_s34b_b88k", HF: "hf:facebook/dinov2-small"}  # fmt: skip


# ---- listing ----


def find(pattern: str | None = None, family: str | None = None) -> list[Entry]:
    """Entries whose name or an alias matches the glob ``pattern`` (case-insensitive, like ``timm.list_models``;
    a pattern without wildcards matches as a substring), of ``family`` when given."""
    if pattern and not any(c in pattern for c in "*?["):
        pattern = f"*{pattern}*"
    pattern = (pattern or "*").lower()
    return [
        e for e in entries().values()
        if (family is None or e.family == family) and any(fnmatch.fnmatchcase(n.lower(), pattern) for n in (e.name, *e.aliases))
    ]  # fmt: skip


def families() -> list[str]:
    return list(dict.fromkeys(e.family for e in entries().values()))


def list_models(
    pattern: str | None = None, family: str | None = None, available: bool = False, weights_dirs: tuple[str | Path, ...] = ()
) -> list[dict[str, object]]:
    """One row per registered backbone (what ``fmprobe models`` prints), read from the catalog: no model is built.

    Choosing backbones (widths, sizes, licences, where the weights come from) should not need torch or a
    download: every row comes from ``catalog.json``, generated from the registry and tested against it, so a
    listing takes milliseconds on a laptop. Names beyond the registered entries (any timm name, ``hf:...``,
    ``openclip:...``) are not listed; :func:`check_backbone_name` tells whether one resolves.

    Parameters
    ----------
    pattern : str or None, optional
        A case-insensitive glob over names and aliases (``"*dino*"``); without wildcards it matches as a
        substring, and a registered name or alias gives its entry alone. None lists every entry.
    family : str or None, optional
        Only the entries of this family (``"dinov2"``, ``"openclip"``, ``"timm"``, ...).
    available : bool, optional
        Add ``available`` to each row: where this machine has the weights, or None when they are not found
        (checks files on disk only; nothing is downloaded).
    weights_dirs : tuple of str or Path, optional
        Folders searched first for ``available``, before ``FMPROBE_WEIGHTS``, the torch hub and Hugging Face
        caches.

    Returns
    -------
    list of dict
        One dict per entry, in registry order: ``name``, ``family``, ``implementation``, ``aliases``,
        ``params_m`` (millions), ``resolution``, ``readouts`` (text, default starred), ``dims`` (width per
        readout), ``default_readout``, ``weights``, ``license``, ``description``, ``paper``, ``download`` (the
        commands that fetch the weights) and, with ``available``, ``available``.

    Raises
    ------
    UnknownNameError
        ``family`` is not a known family (the message lists them), or the catalog file is missing or damaged.

    Examples
    --------
    >>> from fmprobe import list_models
    >>> rows = list_models("*dino*")
    >>> [r["name"] for r in rows][:3]
    ['dino_vitb16_imagenet', 'dinov2_vits14', 'dinov2_vitb14']
    >>> row = list_models("dinov2_vits14")[0]
    >>> row["dims"], row["default_readout"], row["resolution"]
    ({'cls': 384, 'mean_patch': 384, 'cls_mean': 768}, 'cls', 224)
    >>> len(list_models(family="dinov2"))
    8
    >>> list_models(family="dinov2", available=True)[0]["available"]  # doctest: +SKIP
    '/home/me/.cache/torch/hub/checkpoints/dinov2_vits14_pretrain.pth'
    """
    from fmprobe.backbones.places import download_commands, found_where

    if family is not None and family not in families():
        raise UnknownNameError(f"unknown backbone family {family!r}; known: {', '.join(families())}.")
    exact = entries().get(pattern or "") or entries().get(aliases().get(pattern or "", ""))
    rows = []
    for entry in [exact] if exact is not None else find(pattern, family):
        row = {**entry.row(), "download": download_commands(entry.weights)}
        if available:
            row["available"] = found_where(entry.weights, weights_dirs)
        rows.append(row)
    return rows


# ---- the maintainer side: (re)building the data (imports torch and every family) ----


def build_data() -> dict[str, object]:
    """The catalog's content, computed from the live registry (every entry built on the meta device)."""
    from fmprobe.backbones import core

    rows = [describe_entry(spec).to_dict() for _, spec in core.BACKBONES.items()]
    import timm

    versions = {d: installed_version(d) for d in ("torch", "timm", "open_clip_torch", "transformers")}
    return {
        "generated_by": "python -m fmprobe.backbones.catalog --rebuild",
        "versions": versions,
        "entries": rows,
        "timm": {"version": timm.__version__, "models": sorted(timm.list_models())},
    }


def describe_entry(spec: object) -> Entry:
    """A spec as catalog data: widths and parameter count from a shape-only build, aliases with the Hub ids of
    its weights (those no other entry also loads)."""
    from fmprobe.backbones import core

    dims, params = core.describe_shapes(spec, exact=True)  # type: ignore[arg-type]
    repos = [r for _, s in core.BACKBONES.items() for r in dict.fromkeys(repo for repo, _ in s.weights.hf)]
    own = [repo for repo, _ in spec.weights.hf if repos.count(repo) == 1]  # type: ignore[attr-defined]
    return Entry(
        name=spec.name, family=spec.family, implementation=spec.implementation,  # type: ignore[attr-defined]
        aliases=tuple(dict.fromkeys([*spec.aliases, *own])), params=int(params), dims=dims,  # type: ignore[attr-defined]
        readouts=tuple(spec.readouts), default_readout=spec.default_readout,  # type: ignore[attr-defined]
        readout_patterns=tuple(spec.readout_patterns), resolution=int(spec.native_resolution),  # type: ignore[attr-defined]
        weights=spec.weights, description=spec.description, paper=spec.paper,  # type: ignore[attr-defined]
        imagenet_baseline=bool(spec.imagenet_baseline),  # type: ignore[attr-defined]
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """``python -m fmprobe.backbones.catalog --rebuild``: regenerate catalog.json from the registry."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m fmprobe.backbones.catalog", description=main.__doc__)
    parser.add_argument("--rebuild", action="store_true", help="rebuild catalog.json (imports torch, builds on meta)")
    args = parser.parse_args(argv)
    if not args.rebuild:
        parser.print_help()
        return 2
    data = build_data()
    DATA.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {DATA} ({len(data['entries'])} entries, timm {data['timm']['version']})")  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    sys.exit(main())
