"""The layer order of docs/design.md, enforced: nothing below imports from above (parsed with ``ast``)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "operator" / "etcdcron"


def layers() -> dict[str, int]:
    """Top-level module or subpackage name -> its layer (0 lowest), from the ```layers block of the doc."""
    text = (ROOT / "docs" / "design.md").read_text()
    block = re.search(r"```layers\n(.*?)```", text, re.S)
    assert block, "docs/design.md has no ```layers block"
    return {name: i for i, line in enumerate(block.group(1).splitlines()) for name in line.split()}


def unit_of(path: Path) -> str:
    """The layer unit of a source file: its top-level module, or its subpackage."""
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def imported_units(path: Path) -> set[str]:
    """Every ``etcdcron`` unit a file imports, including ``from etcdcron import etcd`` and lazy imports."""
    units: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            if node.module == "etcdcron":
                names = [f"etcdcron.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "etcdcron":
                unit = parts[1] if len(parts) > 1 else "__init__"
                if unit in layers() or (PACKAGE / f"{unit}.py").exists() or (PACKAGE / unit).is_dir():
                    units.add(unit)
                else:
                    units.add("__init__")  # a name re-exported by the package facade
    return units


def test_every_module_has_a_layer() -> None:
    order = layers()
    missing = sorted({unit_of(p) for p in PACKAGE.rglob("*.py")} - set(order))
    assert not missing, f"add these to the layers of docs/design.md: {missing}"


def test_nothing_below_imports_from_above() -> None:
    order = layers()
    violations = [
        f"{path.relative_to(PACKAGE)} (layer {order[unit_of(path)]}) imports {unit} (layer {order[unit]})"
        for path in sorted(PACKAGE.rglob("*.py"))
        for unit in imported_units(path)
        if unit in order and unit_of(path) in order and order[unit] > order[unit_of(path)]
    ]
    assert not violations, "\n".join(violations)


def test_the_checker_sees_a_violation() -> None:
    """The check itself works: the dispatcher importing the controller would be caught."""
    order = layers()
    assert order["controller"] > order["dispatch"] > order["k8s_resource"]
    assert "k8s_resource" in imported_units(PACKAGE / "dispatch" / "kubernetes.py")
    assert "controller" not in imported_units(PACKAGE / "dispatch" / "kubernetes.py")
