"""A rotated token file is picked up by the dispatcher's client and by kopf's login (issue 9, item 7)."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from etcdcron.controller.credentials import connection_info, kubernetes_api


def test_a_rotated_token_file_is_used_for_the_next_request_and_login(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    config = tmp_path / "config"
    config.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
                "users": [{"name": "u", "user": {"tokenFile": "token"}}],  # relative to the kubeconfig
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    api = kubernetes_api(str(config))
    assert connection_info(api).token == "first"
    token.write_text("second\n")
    os.utime(token, ns=(1, 2))  # a different mtime, whatever the file system's resolution
    assert api.configuration.get_api_key_with_prefix("BearerToken") == "Bearer second"
    info = connection_info(api)
    assert (info.scheme, info.token) == ("Bearer", "second")
    api.close()
