# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the edgeai.fleet collection: not a public API, may change without notice.
"""The engine of edgeai.fleet.inference_server_info: read-only facts about a server."""

from __future__ import annotations

import json
import os
import time

from ansible_collections.edgeai.fleet.plugins.module_utils._device_facts import gather as gather_device
from ansible_collections.edgeai.fleet.plugins.module_utils._errors import EdgeAIError, ServerError
from ansible_collections.edgeai.fleet.plugins.module_utils._inference_client import (
    InferenceClient,
    inference_server_argument_spec,
)
from ansible_collections.edgeai.fleet.plugins.module_utils._layout import MANIFEST

GATHER = ["health", "metadata", "index", "stats", "device", "staged"]
DEFAULT_GATHER = ["health", "metadata", "index", "stats"]
# Written by the inference_server role: what the running server is (its image's backends).
SERVER_FILE = "/etc/edgeai/inference-server.json"
ARGUMENT_SPEC = inference_server_argument_spec(
    gather=dict(type="list", elements="str", default=list(DEFAULT_GATHER), choices=GATHER),
    models=dict(type="list", elements="str"),
    fail_unreachable=dict(type="bool", default=False),
    wait=dict(type="float", default=0.0),
    root=dict(type="path", default="/"),
    artifacts=dict(type="path", default="/var/lib/edgeai/artifacts"),
)


def staged_versions(artifacts, names):
    """{model: [versions]} staged under ``artifacts`` (complete ones: they have a manifest)."""
    out = {}
    for name in names or []:
        folder = os.path.join(artifacts, name)
        try:
            entries = os.listdir(folder)
        except OSError:
            entries = []
        out[name] = sorted(int(e) for e in entries if e.isdigit()
                           and os.path.isfile(os.path.join(folder, e, MANIFEST)))
    return out


def server_description(path=SERVER_FILE):
    """The role's description of the running server, or None when there is none."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class ServerInfo:
    def __init__(self, params, client=None, sleep=time.sleep, clock=time.monotonic):
        self.p = params
        self.client = client or InferenceClient.from_params(params)
        self._sleep = sleep
        self._clock = clock

    def _wait_healthy(self):
        """live (and ready when health is gathered), waiting up to ``wait`` seconds: a device
        that just came back (power cut, reboot) may still be starting its server."""
        deadline = self._clock() + max(0.0, self.p.get("wait") or 0.0)
        want_ready = "health" in self.p["gather"]
        while True:
            live = self.client.live()
            ready = self.client.ready() if live and want_ready else None
            if (live and (ready or not want_ready)) or self._clock() >= deadline:
                return live, ready
            self._sleep(min(2.0, max(0.1, deadline - self._clock())))

    def run(self):
        gather = set(self.p["gather"])
        result = {"changed": False, "url": self.p["url"]}
        if "device" in gather:
            result["device"] = gather_device(root=self.p.get("root") or "/", models_path=self.p["artifacts"])
            # the role's record is the device's real state, not part of its hardware description
            described = server_description(SERVER_FILE)
            result["backends"] = (described or {}).get("backends")
        if "staged" in gather:
            result["staged"] = staged_versions(self.p["artifacts"], self.p.get("models"))
        live, ready = self._wait_healthy()
        result["live"] = live
        if not live:
            if self.p["fail_unreachable"]:
                raise EdgeAIError("the inference server at {} is not live".format(self.p["url"]), live=False)
            result.update({"ready": False, "server": None, "models": [], "stats": {}})
            return result
        if "health" in gather:
            result["ready"] = ready
        if "metadata" in gather:
            result["server"] = self.client.server_metadata()
        index = []
        if "index" in gather or ("stats" in gather and not self.p.get("models")):
            index = self.client.repository_index()
            result["models"] = index
            result["ready_models"] = sorted(set(e["name"] for e in index if e.get("state") == "READY"))
        if "stats" in gather:
            names = self.p.get("models") or sorted(set(e["name"] for e in index if e.get("state") == "READY"))
            stats = {}
            supported = True
            for name in names:
                try:
                    data = self.client.model_stats(name)
                except ServerError:
                    data = None
                if data is None:
                    supported = False
                    stats[name] = None
                else:
                    stats[name] = _summarise(data)
            result["stats"] = stats
            result["stats_supported"] = supported if names else None
        return result


def _summarise(data):
    """Per version: counts and mean durations from Triton's statistics extension."""
    out = []
    for entry in data.get("model_stats", []):
        inference = entry.get("inference_stats") or {}
        success = inference.get("success") or {}
        fail = inference.get("fail") or {}
        count = success.get("count") or 0
        out.append({
            "version": entry.get("version"),
            "inference_count": entry.get("inference_count", 0),
            "execution_count": entry.get("execution_count", 0),
            "success_count": count,
            "failure_count": fail.get("count") or 0,
            "mean_latency_ms": round(success.get("ns", 0) / count / 1e6, 3) if count else None,
            "last_inference_ms": entry.get("last_inference"),
            "raw": entry,
        })
    return out


def run_module(module_cls):
    module = module_cls(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    try:
        result = ServerInfo(module.params).run()
    except EdgeAIError as exc:
        module.fail_json(msg=exc.msg, **exc.details)
    module.exit_json(**result)
