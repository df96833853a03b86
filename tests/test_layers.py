"""The package's layering, checked on the source: dependencies point down (docs/architecture.md)."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "edgeseg"

# layer of each top-level part; a module may import its own layer and those below (higher number = lower layer)
LAYERS = {
    "cli": 0,
    "commands": 1,
    "backends": 2,
    "bench": 2,
    "estimate": 2,
    "sweep": 2,
    "gates": 2,
    "check": 2,
    "check_history": 2,
    "models": 3,
    "quantize": 3,
    "eval": 3,
    "train": 3,
    "export_request": 3,
    "rewrite": 4,
    "data": 4,
    "lint": 5,
    "artifact": 5,
    "residency": 5,
    "io": 5,
    "errors": 5,
    "paths": 5,
}


def _part(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "edgeseg" else None


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names)


def test_no_module_imports_a_layer_above_it():
    upward = []
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG).with_suffix("")
        own = rel.parts[0] if len(rel.parts) > 1 else rel.name
        if own not in LAYERS:
            continue
        for module in _imports(path):
            target = _part(module)
            if target in LAYERS and LAYERS[target] < LAYERS[own]:
                upward.append(f"{rel}: imports {module}")
    assert not upward, "\n".join(upward)


def test_no_module_is_over_800_lines():
    big = [f"{p.relative_to(PKG)}: {n}" for p in PKG.rglob("*.py") if (n := len(p.read_text().splitlines())) > 800]
    assert not big, big
