# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""edgeai.fleet.release_build (documented in plugins/modules/release_build.py): runs on the
controller only. All the work is plain Python in plugins/plugin_utils/_release_build; this file
checks the arguments, maps inventory groups to platforms from the inventory, and reports."""

from __future__ import annotations

from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase
from ansible_collections.edgeai.fleet.plugins.module_utils._errors import EdgeAIError
from ansible_collections.edgeai.fleet.plugins.plugin_utils._release_build import build_release
from ansible_collections.edgeai.fleet.plugins.plugin_utils._release_build._build import split_list
from ansible_collections.edgeai.fleet.plugins.plugin_utils._release_build._common import PLATFORMS, plain

PUBLISH_OPTIONS = dict(
    type=dict(type="str", required=True, choices=["https", "oci"]),
    url=dict(type="str"),
    release_url=dict(type="str"),
    registry=dict(type="str"),
    repository=dict(type="str"),
    tag=dict(type="str"),
    username=dict(type="str"),
    password=dict(type="str", no_log=True),
    token=dict(type="str", no_log=True),
    ca_path=dict(type="path"),
    validate_certs=dict(type="bool", default=True),
    timeout=dict(type="float", default=120.0),
    retries=dict(type="int", default=3),
    auth_hosts=dict(type="list", elements="str", default=[]),
)
ARGUMENT_SPEC = dict(
    model=dict(type="raw", required=True),
    name=dict(type="str", required=True),
    version=dict(type="int", required=True),
    out=dict(type="path", required=True),
    platforms=dict(type="raw"),
    inputs=dict(type="raw"),
    input_shapes=dict(type="dict"),
    seed=dict(type="int", default=0),
    expected_outputs=dict(type="raw"),
    allow_unchecked_outputs=dict(type="bool", default=False),
    tolerance=dict(type="raw"),
    relative_tolerance=dict(type="float"),
    max_batch_size=dict(type="raw", default=0),
    config=dict(type="raw"),
    signature=dict(type="dict"),
    requires=dict(type="dict"),
    edgetpu_runtime=dict(type="raw"),
    urls=dict(type="dict"),
    publish=dict(type="dict", options=PUBLISH_OPTIONS),
    max_smoke_test_mb=dict(type="float", default=32.0),
    release_file=dict(type="path"),
)


def group_platforms(keys, task_vars):
    """{key: platform} for keys that are platforms or inventory groups whose devices all have
    one platform (edge_platform, or the gathered edge_device facts)."""
    groups = task_vars.get("groups") or {}
    hostvars = task_vars.get("hostvars") or {}
    mapping = {}
    for key in keys:
        key = str(key)
        if key in PLATFORMS:
            mapping[key] = key
            continue
        hosts = groups.get(key)
        if not hosts:
            raise EdgeAIError(f"platforms: {key} is neither a platform ({', '.join(PLATFORMS)}) nor an inventory group "
                              f"with hosts; map it yourself: platforms: {{{key}: jetson}}")
        seen = set()
        for host in hosts:
            hv = hostvars.get(host) or {}
            platform = hv.get("edge_platform") or ((hv.get("ansible_facts") or {}).get("edge_device") or {}).get(
                "platform")
            seen.add(str(platform) if platform else None)
        if len(seen) != 1 or None in seen or not seen <= set(PLATFORMS):
            shown = ", ".join(sorted(str(s) for s in seen))
            raise EdgeAIError(f"platforms: the devices of group {key} are not all of one platform ({shown}); map it "
                              f"yourself: platforms: {{{key}: jetson}}")
        mapping[key] = seen.pop()
    return mapping


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        validation, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        args = plain(dict(args))
        try:
            platforms = args.pop("platforms")
            model = args.pop("model")
            keys = None
            if isinstance(platforms, str):
                keys = split_list(platforms)
            elif isinstance(platforms, list):
                keys = platforms
            elif platforms is None and isinstance(model, dict):
                keys = list(model)
            if keys is not None:
                platforms = group_platforms(keys, task_vars)
            if isinstance(model, str):
                model = model.strip()
            built = build_release(model=model, platforms=platforms, check_mode=self._task.check_mode, **args)
        except EdgeAIError as exc:
            return dict(result, failed=True, msg=exc.msg, **(exc.details or {}))
        except (OSError, ValueError) as exc:
            return dict(result, failed=True, msg=f"release_build: {to_text(exc)}")
        result.update(built)
        return result
