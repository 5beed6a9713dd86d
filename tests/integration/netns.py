"""A network namespace joined to this host by a veth pair, to cut one process off the network and back.

Only addresses this creates are used: a link-local /30 on the pair (host side .1, namespace side .2).
Names carry this process's pid, so a later run can tell a killed run's leftovers and remove them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass

_NS = re.compile(r"^etcdcron-(\d+)-\d+$")
_VETH = re.compile(r"^ecv(\d+)[hn]\d+$")


def _ip(*args: str, check: bool = True) -> str:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def unavailable() -> str | None:
    """Why namespaces cannot be used here (one line), or None."""
    if os.geteuid() != 0:
        return "needs root to create a network namespace"
    if shutil.which("ip") is None:
        return "needs the ip command (iproute2)"
    if subprocess.run(["ip", "netns", "list"], capture_output=True, timeout=30).returncode != 0:
        return "ip netns is not available"
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_leftovers() -> None:
    """Namespaces and veths of earlier runs whose process is gone (killed before it could clean up)."""
    for line in _ip("netns", "list").splitlines():
        name = line.split()[0] if line.split() else ""
        match = _NS.match(name)
        if match and not _alive(int(match.group(1))):
            _ip("netns", "delete", name, check=False)
    for line in _ip("-o", "link", "show").splitlines():
        name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
        match = _VETH.match(name)
        if match and not _alive(int(match.group(1))):
            _ip("link", "delete", name, check=False)


@dataclass
class NetnsLink:
    """``exec_prefix`` runs a command inside; ``down()``/``up()`` switch its end of the link."""

    serial: int

    def __post_init__(self) -> None:
        pid = os.getpid()
        self.namespace = f"etcdcron-{pid}-{self.serial}"
        self.host_veth, self.ns_veth = f"ecv{pid}h{self.serial}", f"ecv{pid}n{self.serial}"
        used = _ip("-o", "-4", "addr", "show")
        octets = ((pid + self.serial + k) % 250 + 1 for k in range(250))
        octet = next(o for o in octets if o != 169 and f"inet 169.254.{o}." not in used)
        self.host_ip, self.ns_ip = f"169.254.{octet}.1", f"169.254.{octet}.2"

    @property
    def exec_prefix(self) -> tuple[str, ...]:
        return ("ip", "netns", "exec", self.namespace)

    def create(self) -> NetnsLink:
        try:
            _ip("netns", "add", self.namespace)
            _ip("link", "add", self.host_veth, "type", "veth", "peer", "name", self.ns_veth)
            _ip("link", "set", self.ns_veth, "netns", self.namespace)
            _ip("addr", "add", f"{self.host_ip}/30", "dev", self.host_veth)
            _ip("link", "set", self.host_veth, "up")
            _ip("-n", self.namespace, "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_veth)
            _ip("-n", self.namespace, "link", "set", "lo", "up")
            self.up()
        except BaseException:
            self.remove()
            raise
        return self

    def down(self) -> None:
        _ip("-n", self.namespace, "link", "set", self.ns_veth, "down")

    def up(self) -> None:
        _ip("-n", self.namespace, "link", "set", self.ns_veth, "up")

    def remove(self) -> None:
        """Deleting the namespace deletes its veth end, and with it the pair; both are tried anyway."""
        _ip("netns", "delete", self.namespace, check=False)
        _ip("link", "delete", self.host_veth, check=False)
