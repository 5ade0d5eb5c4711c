"""The layer table of the README, checked: which packages each package may import.

Data flows down the table and imports point only at the layers a package is allowed to
see. The check reads every module's import statements (top-level and local imports alike)
with `ast`, so a violation is caught before anything runs; `tests/envs/test_no_jax.py`
additionally checks at run time that importing the environments loads no jax.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "agentic_rl"

# package (or top-level module) -> the agentic_rl packages/modules it may import
ALLOWED: dict[str, set[str]] = {
    "registry": set(),
    "shapes": set(),
    "compile_cache": set(),
    "models": {"registry"},
    "sampling": {"models", "shapes"},
    "envs": {"registry"},
    "rl": {"registry"},
    "rollout": {"models", "sampling", "envs", "shapes"},
    "agents": {"models", "sampling", "envs", "rollout", "registry", "shapes"},
    "train": {"models", "sampling", "envs", "rollout", "agents", "rl", "registry", "shapes",
              "compile_cache"},
}
# third-party array/ML libraries a package must never import
FORBIDDEN_EXTERNAL: dict[str, set[str]] = {
    "envs": {"jax", "flax", "optax", "orbax", "transformers", "torch"},
    "rl": {"flax.nnx", "transformers", "torch", "orbax"},
    "shapes": {"jax", "flax"},
    "registry": {"jax", "flax", "numpy"},
}


def _layer(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
            if node.module == "agentic_rl":  # `from agentic_rl import models`
                out += [(node.lineno, f"agentic_rl.{a.name}") for a in node.names]
    return out


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if _layer(p) in ALLOWED)


def test_every_layer_is_listed():
    """A new package must get a row in ALLOWED (and in the README's layer table)."""
    top = {p.stem for p in PACKAGE.glob("*.py")} | {p.name for p in PACKAGE.iterdir()
                                                     if (p / "__init__.py").exists()}
    cli = {"__init__", "__main__", "chat", "evaluate", "serve"}  # entry points: may import all
    assert top - cli - set(ALLOWED) == set()


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_layer_table(path: Path):
    layer = _layer(path)
    bad = []
    for line, name in _imports(path):
        parts = name.split(".")
        if parts[0] == "agentic_rl" and len(parts) > 1:
            target = parts[1]
            if target != layer and target not in ALLOWED[layer]:
                bad.append(f"line {line}: {name} ({layer} may import {sorted(ALLOWED[layer])})")
        for banned in FORBIDDEN_EXTERNAL.get(layer, ()):
            if name == banned or name.startswith(banned + "."):
                bad.append(f"line {line}: {name} ({layer} never imports {banned})")
    assert not bad, "\n".join(bad)


def test_the_check_catches_a_violation(tmp_path):
    """The reader itself sees local and `from agentic_rl import x` imports."""
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from agentic_rl import models\n    import jax.numpy\n")
    names = [n for _, n in _imports(f)]
    assert "agentic_rl.models" in names and "jax.numpy" in names


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")),
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_module_says_what_it_may_import(path: Path):
    """Each module's opening docstring says what lives there and, in an `Imports:` line,
    what it may import: the layer table, module by module, where a reader looks first."""
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    assert doc, f"{path.relative_to(PACKAGE)} has no module docstring"
    assert "Imports:" in doc, f"{path.relative_to(PACKAGE)}: its docstring has no `Imports:` line"
