"""Keeps the DESIGN.md dependency table true: the data path goes one way, and the CPU side never needs torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fmprobe"

BASE = {"errors", "registry", "tasks", "_io"}
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "tasks": {"errors"},
    "_io": {"errors"},
    "registry": {"errors"},
    "runtime": {"errors", "_io"},
    "progress": set(),  # tqdm, drawn as the output device suits; every long loop uses it
    "checks": BASE | {"datasets", "backbones", "probes"},  # light input checks before the heavy stack loads
    "datasets": BASE,
    "backbones": BASE,
    "store": {"errors", "tasks", "_io"},
    "metrics": BASE,
    "probes": BASE | {"metrics"},
    "results": {"errors", "tasks", "_io"},
    "report": BASE | {"results", "metrics", "store"},  # store: embedding maps and provenance read feature files
    "extract": BASE | {"datasets", "backbones", "store", "runtime", "progress"},
    "probing": BASE | {"store", "probes", "metrics", "results", "progress", "sharding"},
    "finetune": BASE | {"datasets", "backbones", "metrics", "results", "runtime", "progress"},
    "preflight": BASE | {"datasets", "backbones"},  # before a study: is every dataset and weight file here (offline)
    "sharding": BASE | {"store"},  # --shard I/N: items dealt by a hash of their key (the "I/N" parser is the store's)
    "study": None,  # type: ignore[dict-item]  # the grid runner may use everything
    "demo": None,  # type: ignore[dict-item]
    "cli": {"errors", "checks", "progress", "runtime"},  # plus the public API in fmprobe/__init__.py
    "__init__": None,  # type: ignore[dict-item]  # the public API facade (lazy imports)
    "__main__": {"cli"},
}
TORCH_FREE = {"errors", "registry", "store", "metrics", "probes", "results", "report", "probing", "checks", "progress",
              "sharding", "preflight"}


def _module_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            if node.module == "fmprobe":
                names.update(f"fmprobe.{alias.name}" for alias in node.names)
    return names


def test_layering_follows_the_design_table() -> None:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_of(path)
        allowed = ALLOWED.get(module, "unknown")
        assert allowed != "unknown", f"{path}: module {module!r} is not in the design table; add it to DESIGN.md and here"
        if allowed is None:
            continue
        for name in _imports(path):
            if not name.startswith("fmprobe.") and name != "fmprobe":
                continue
            parts = name.split(".")
            target = parts[1] if len(parts) > 1 else "__init__"
            # Only the CLI may import the package root (the public API facade); anywhere else `import fmprobe`
            # would hide a dependency on whatever the facade imports (the extractor, torch).
            public_api = module == "cli" and name == "fmprobe"
            if target != module and target not in allowed and not public_api:
                problems.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
    assert not problems, "imports against the design table:\n" + "\n".join(problems)


def test_cpu_side_never_imports_torch() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE.parent)} imports {name}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if _module_of(path) in TORCH_FREE
        for name in _imports(path)
        if name.split(".")[0] in {"torch", "torchvision", "timm", "transformers", "open_clip"}
    ]
    assert not offenders, "\n".join(offenders)


def test_dir_lists_the_public_api_before_anything_heavy_is_imported() -> None:
    code = "import fmprobe, sys; names = dir(fmprobe); print('torch' in sys.modules, 'probe_features' in names, 'FeatureFile' in names, 'TYPE_CHECKING' in names)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True", "True", "False"]
