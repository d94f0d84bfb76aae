# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the edgeai.fleet collection: not a public API, may change without notice.
#
# The engine of edgeai.fleet.docker_daemon_config: merge keys into a Docker JSON
# configuration file (daemon.json, a client's config.json) while keeping every key the
# user put there.

from __future__ import annotations

import copy
import json
import os
import tempfile

from ansible_collections.edgeai.fleet.plugins.module_utils._errors import EdgeAIError

ARGUMENT_SPEC = dict(
    path=dict(type="path", default="/etc/docker/daemon.json"),
    settings=dict(type="dict", default={}),
    remove_keys=dict(type="list", elements="str", default=[], no_log=False),
    backup=dict(type="bool", default=False),
)


class DaemonConfigError(EdgeAIError):
    """The existing file cannot be merged into (not JSON, not an object)."""


def deep_merge(base: dict, overlay: dict) -> dict:
    """Return base with overlay merged in: dicts merge recursively, everything else is replaced."""
    result = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = deep_merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def remove_keys(config: dict, keys: list[str]) -> dict:
    """Remove keys; a dotted key ('runtimes.nvidia') removes a nested one."""
    result = copy.deepcopy(config)
    for key in keys:
        parts = key.split(".")
        node = result
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
            if node is None:
                break
        if isinstance(node, dict):
            node.pop(parts[-1], None)
    return result


def load(path: str) -> tuple[dict, bool]:
    """(config, existed). A missing or empty file is an empty config."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        return {}, False
    if not text.strip():
        return {}, True
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise DaemonConfigError(f"{path} is not valid JSON ({exc}); refusing to overwrite it") from exc
    if not isinstance(data, dict):
        raise DaemonConfigError(f"{path} holds a JSON {type(data).__name__}, not an object; refusing to overwrite it")
    return data, True


def render(config: dict) -> str:
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


class DockerConfigFile:
    """The merge, with the module's file helpers (backup, atomic move, owner/mode/SELinux)."""

    def __init__(self, module) -> None:
        self.module = module
        self.params = module.params

    def run(self) -> dict:
        path = self.params["path"]
        before, existed = load(path)
        after = deep_merge(before, self.params["settings"] or {})
        after = remove_keys(after, self.params["remove_keys"] or [])
        changed = (after != before) or not existed
        result = {
            "changed": changed,
            "path": path,
            "config": after,
            "diff": {
                "before": render(before) if existed else "",
                "after": render(after),
                "before_header": path,
                "after_header": path,
            },
        }
        if changed and not self.module.check_mode:
            backup = self.write(path, render(after), existed)
            if backup:
                result["backup_file"] = backup
        result["changed"] = self.module.set_fs_attributes_if_different(
            self.module.load_file_common_arguments(self.module.params, path=path), changed
        ) if (existed or (changed and not self.module.check_mode)) else changed
        return result

    def write(self, path: str, text: str, existed: bool) -> str | None:
        backup = None
        if existed and self.params["backup"]:
            backup = self.module.backup_local(path)
        directory = os.path.dirname(path) or "."
        if not os.path.isdir(directory):
            os.makedirs(directory, mode=0o755)
        fd, tmp = tempfile.mkstemp(prefix=".edgeai-", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            self.module.atomic_move(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return backup


def run_module(module_cls):
    """Entry point used by plugins/modules/docker_daemon_config.py."""
    module = module_cls(argument_spec=ARGUMENT_SPEC, add_file_common_args=True, supports_check_mode=True)
    try:
        result = DockerConfigFile(module).run()
    except EdgeAIError as exc:
        module.fail_json(msg=exc.msg, **exc.details)
    module.exit_json(**result)
