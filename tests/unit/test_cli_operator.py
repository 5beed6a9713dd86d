"""``etcdcron operator`` startup problems: one line naming the flag or file, exit 2 (bad input) or 1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def operator(*args: str, home: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")}
    clean.update({"HOME": str(home), "PYTHONPATH": str(ROOT / "operator"), **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "etcdcron.cli", "operator", "--endpoints", "127.0.0.1:1", *args],
        capture_output=True,
        text=True,
        env=clean,
        timeout=60,
    )


def kubeconfig(path: Path) -> Path:
    """A well-formed kubeconfig; nothing here contacts its server before the ports are bound."""
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "c", "cluster": {"server": "https://127.0.0.1:1", "insecure-skip-tls-verify": True}}
        ],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_no_kubeconfig_names_the_default_file(tmp_path: Path) -> None:
    result = operator(home=tmp_path)
    assert result.returncode == 2
    line = one_line(result)
    assert "--kubeconfig" in line and str(tmp_path / ".kube" / "config") in line


def test_a_missing_kubeconfig_file(tmp_path: Path) -> None:
    result = operator("--kubeconfig", str(tmp_path / "nope"), home=tmp_path)
    assert result.returncode == 2 and "no such file" in one_line(result)


@pytest.mark.parametrize("content", ["garbage: [", "just text", "apiVersion: v1\nkind: Config\n"])
def test_a_garbage_kubeconfig(tmp_path: Path, content: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(content)
    result = operator("--kubeconfig", str(bad), home=tmp_path)
    assert result.returncode == 2
    assert f"--kubeconfig {bad}: not a usable kubeconfig" in one_line(result)


def test_kubeconfig_comes_from_the_environment(tmp_path: Path) -> None:
    result = operator(home=tmp_path, env={"KUBECONFIG": str(tmp_path / "from-env")})
    assert result.returncode == 2 and str(tmp_path / "from-env") in one_line(result)


@pytest.mark.parametrize("flag", ["--metrics-port", "--health-port"])
def test_a_port_in_use_names_its_flag(tmp_path: Path, flag: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        other = "--health-port" if flag == "--metrics-port" else "--metrics-port"
        result = operator(
            "--kubeconfig",
            str(kubeconfig(tmp_path / "config")),
            "--bind-address",
            "127.0.0.1",
            flag,
            str(port),
            other,
            "0",
            home=tmp_path,
        )
    assert result.returncode == 1
    line = one_line(result)
    assert line.startswith(f"etcdcron: error: {flag} {port}: cannot listen on 127.0.0.1"), line


def test_verbose_after_the_subcommand_is_accepted(tmp_path: Path) -> None:
    result = operator("-v", "--kubeconfig", str(tmp_path / "nope"), home=tmp_path)
    assert result.returncode == 2 and "no such file" in result.stderr  # not a usage error


def test_help_says_where_credentials_come_from(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "etcdcron.cli", "operator", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "operator")},
        timeout=60,
    )
    assert "$KUBECONFIG" in " ".join(result.stdout.split()) and "~/.kube/config" in result.stdout
