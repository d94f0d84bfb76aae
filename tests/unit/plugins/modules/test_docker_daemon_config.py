# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""docker_daemon_config: merge keeps the user's keys, changes only when needed, honours check mode."""

from __future__ import annotations

import json

import pytest
from ansible.module_utils.testing import patch_module_args
from ansible_collections.edgeai.fleet.plugins.module_utils._docker_daemon_config import deep_merge, remove_keys
from ansible_collections.edgeai.fleet.plugins.modules import docker_daemon_config

NVIDIA = {"runtimes": {"nvidia": {"path": "nvidia-container-runtime", "args": []}}, "default-runtime": "nvidia"}


def run(capsys, **args):
    with patch_module_args(args), pytest.raises(SystemExit) as exc:
        docker_daemon_config.main()
    return exc.value.code, json.loads(capsys.readouterr().out)


def test_merge_keeps_user_keys_and_is_idempotent(capsys, tmp_path):
    path = tmp_path / "daemon.json"
    path.write_text(json.dumps({"log-driver": "journald", "runtimes": {"crun": {"path": "/usr/bin/crun"}}}))
    rc, out = run(capsys, path=str(path), settings=NVIDIA, _ansible_diff=True)
    assert rc == 0 and out["changed"] is True
    data = json.loads(path.read_text())
    assert data["log-driver"] == "journald"
    assert set(data["runtimes"]) == {"crun", "nvidia"}
    assert data["default-runtime"] == "nvidia"
    assert '"default-runtime": "nvidia"' in out["diff"]["after"]
    assert '"default-runtime"' not in out["diff"]["before"]
    rc, out = run(capsys, path=str(path), settings=NVIDIA)
    assert out["changed"] is False


def test_check_mode_changes_nothing(capsys, tmp_path):
    path = tmp_path / "daemon.json"
    path.write_text('{"debug": true}')
    rc, out = run(capsys, path=str(path), settings=NVIDIA, _ansible_check_mode=True)
    assert out["changed"] is True
    assert path.read_text() == '{"debug": true}'
    missing = tmp_path / "etc/docker/daemon.json"
    rc, out = run(capsys, path=str(missing), settings=NVIDIA, _ansible_check_mode=True)
    assert out["changed"] is True and not missing.exists()


def test_creates_missing_file_and_directory(capsys, tmp_path):
    path = tmp_path / "etc/docker/daemon.json"
    rc, out = run(capsys, path=str(path), settings={"features": {"cdi": True}}, mode="0600")
    assert out["changed"] is True
    assert json.loads(path.read_text()) == {"features": {"cdi": True}}
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_refuses_invalid_json(capsys, tmp_path):
    path = tmp_path / "daemon.json"
    path.write_text("{broken")
    rc, out = run(capsys, path=str(path), settings=NVIDIA)
    assert rc == 1 and out["failed"] is True
    assert "not valid JSON" in out["msg"]
    assert path.read_text() == "{broken"


def test_remove_keys(capsys, tmp_path):
    path = tmp_path / "daemon.json"
    path.write_text(json.dumps({"default-runtime": "nvidia", "runtimes": {"nvidia": {}, "crun": {}}, "x": 1}))
    rc, out = run(capsys, path=str(path), remove_keys=["default-runtime", "runtimes.nvidia", "absent.key"])
    assert out["changed"] is True
    assert json.loads(path.read_text()) == {"runtimes": {"crun": {}}, "x": 1}


def test_deep_merge_replaces_lists_and_scalars():
    assert deep_merge({"a": [1], "b": {"c": 1, "d": 2}}, {"a": [2], "b": {"c": 3}}) == {"a": [2], "b": {"c": 3, "d": 2}}
    assert remove_keys({"a": {"b": 1}}, ["a.b.c", "z"]) == {"a": {"b": 1}}
