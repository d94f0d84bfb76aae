# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the edgeai.fleet collection: not a public API, may change without notice.
"""The engine of edgeai.fleet.inference_server_info: read-only facts about a server."""

from __future__ import annotations

from ansible_collections.edgeai.fleet.plugins.module_utils._errors import EdgeAIError, ServerError
from ansible_collections.edgeai.fleet.plugins.module_utils._inference_client import (
    InferenceClient,
    inference_server_argument_spec,
)

GATHER = ["health", "metadata", "index", "stats"]
ARGUMENT_SPEC = inference_server_argument_spec(
    gather=dict(type="list", elements="str", default=list(GATHER), choices=GATHER),
    models=dict(type="list", elements="str"),
    fail_unreachable=dict(type="bool", default=False),
)


class ServerInfo:
    def __init__(self, params, client=None):
        self.p = params
        self.client = client or InferenceClient.from_params(params)

    def run(self):
        gather = set(self.p["gather"])
        result = {"changed": False, "url": self.p["url"]}
        live = self.client.live()
        result["live"] = live
        if not live:
            if self.p["fail_unreachable"]:
                raise EdgeAIError("the inference server at {} is not live".format(self.p["url"]), live=False)
            result.update({"ready": False, "server": None, "models": [], "stats": {}})
            return result
        if "health" in gather:
            result["ready"] = self.client.ready()
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
