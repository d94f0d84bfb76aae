# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""inference_model's engine (plugins/module_utils/_inference_model.py) and the protocol client,
against a small KServe v2 server on loopback that reads a real model repository folder.
The integration tests run the same flows against the real Triton and LiteRT servers."""

from __future__ import annotations

import json
import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from ansible_collections.edgeai.fleet.plugins.module_utils._errors import EdgeAIError
from ansible_collections.edgeai.fleet.plugins.module_utils._inference_client import InferenceClient
from ansible_collections.edgeai.fleet.plugins.module_utils._inference_model import (
    ARGUMENT_SPEC,
    InferenceModel,
    compare_outputs,
)
from ansible_collections.edgeai.fleet.plugins.module_utils._server_info import ServerInfo

CONFIG = 'name: "scale"\nbackend: "python"\ninput [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]\n' \
         'output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]\n'


class FakeServer(BaseHTTPRequestHandler):
    """Serves the highest version folder of each loaded model; a model file holding FAIL
    refuses to load (and the loaded version stays), like Triton does."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _reply(self, status, body=None):
        raw = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self):
        srv = self.server
        path = self.path
        if path in ("/v2/health/live", "/v2/health/ready"):
            return self._reply(200)
        if path == "/v2":
            return self._reply(200, {"name": "fake", "version": "0", "extensions": ["model_repository"]})
        match = re.match(r"^/v2/models/([^/]+)(?:/versions/(\d+))?(/ready|/stats)?$", path)
        if match:
            name, version, tail = match.groups()
            loaded = srv.loaded.get(name)
            ok = loaded is not None and (version is None or int(version) == loaded[0])
            if tail == "/stats":
                return self._reply(404, {"error": "no statistics here"})
            if tail == "/ready":
                return self._reply(200 if ok else 400)
            if not ok:
                return self._reply(404, {"error": "unknown model"})
            return self._reply(200, {"name": name, "versions": [str(loaded[0])],
                                     "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [-1]}],
                                     "outputs": [{"name": "OUTPUT0", "datatype": "FP32", "shape": [-1]}]})
        return self._reply(404, {"error": "not found"})

    def do_POST(self):
        srv = self.server
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        srv.calls.append(self.path)
        if self.path == "/v2/repository/index":
            index = [{"name": n, "version": str(v), "state": "READY"} for n, (v, _k) in srv.loaded.items()]
            return self._reply(200, index)
        match = re.match(r"^/v2/repository/models/([^/]+)/(load|unload)$", self.path)
        if match:
            name, action = match.groups()
            if action == "unload":
                srv.loaded.pop(name, None)
                return self._reply(200)
            folder = os.path.join(srv.repo, name)
            versions = sorted(int(n) for n in os.listdir(folder) if n.isdigit()) if os.path.isdir(folder) else []
            if not versions or not os.path.exists(os.path.join(folder, "config.pbtxt")):
                return self._reply(400, {"error": "no model"})
            with open(os.path.join(folder, str(versions[-1]), "model.txt")) as handle:
                text = handle.read()
            if "FAIL" in text:
                return self._reply(400, {"error": f"load failed for model '{name}': broken on purpose"})
            srv.loaded[name] = (versions[-1], float(text))
            return self._reply(200)
        match = re.match(r"^/v2/models/([^/]+)(?:/versions/(\d+))?/infer$", self.path)
        if match:
            name = match.group(1)
            if name not in srv.loaded:
                return self._reply(400, {"error": "not loaded"})
            version, k = srv.loaded[name]
            data = body["inputs"][0]["data"]
            return self._reply(200, {"model_name": name, "model_version": str(version), "outputs": [
                {"name": "OUTPUT0", "datatype": "FP32", "shape": [len(data)], "data": [x * k for x in data]}]})
        return self._reply(404, {"error": "not found"})


@pytest.fixture
def env(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeServer)
    server.repo, server.loaded, server.calls = str(repo), {}, []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield {"tmp": tmp_path, "repo": repo, "server": server, "url": f"http://127.0.0.1:{server.server_address[1]}"}
    server.shutdown()
    server.server_close()


def stage(env, version, content):
    folder = env["tmp"] / "artifacts" / "scale" / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.txt").write_text(content)
    (folder / "config.pbtxt").write_text(CONFIG)
    (folder / ".edgeai-artifact.json").write_text("{}")


def params(env, **kw):
    p = dict((k, v.get("default")) for k, v in ARGUMENT_SPEC.items())
    p.update(name="scale", url=env["url"], repository=str(env["repo"]), artifacts=str(env["tmp"] / "artifacts"),
             state_dir=str(env["tmp"] / "state"), poll_interval=0.05, load_timeout=5.0,
             smoke_test={"enabled": True, "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [2],
                                                      "data": [1, 2]}],
                         "tolerance": 1e-5, "relative_tolerance": 0.0, "requests": 1})
    p.update(kw)
    return p


def expect(k):
    return [{"name": "OUTPUT0", "data": [1 * k, 2 * k]}]


def deploy(env, version, k=None, check_mode=False, **kw):
    p = params(env, version=version, **kw)
    if k is not None:
        p["smoke_test"] = dict(p["smoke_test"], expected_outputs=expect(k))
    return InferenceModel(p, check_mode=check_mode).run()


def test_deploy_swap_idempotence_and_check_mode(env):
    stage(env, 1, "1")
    stage(env, 2, "2")
    planned = deploy(env, 1, k=1, check_mode=True)
    assert planned["changed"] is True and not (env["repo"] / "scale").exists()
    first = deploy(env, 1, k=1)
    assert first["changed"] is True and first["active_version"] == 1 and first["previous_version"] is None
    assert sorted(os.listdir(env["repo"] / "scale")) == ["1", "config.pbtxt"]
    assert not (env["repo"] / "scale" / "1" / ".edgeai-artifact.json").exists()
    loads = env["server"].calls.count("/v2/repository/models/scale/load")
    assert deploy(env, 1, k=1)["changed"] is False
    assert env["server"].calls.count("/v2/repository/models/scale/load") == loads  # no reload
    second = deploy(env, 2, k=2)
    assert (second["active_version"], second["previous_version"]) == (2, 1)
    assert second["load_time_s"] >= 0 and second["smoke_latency_ms"] > 0
    assert sorted(os.listdir(env["repo"] / "scale")) == ["2", "config.pbtxt"]
    assert env["server"].loaded["scale"] == (2, 2.0)


def test_failed_load_rolls_back_and_old_version_serves(env):
    stage(env, 1, "1")
    stage(env, 2, "FAIL")
    deploy(env, 1, k=1)
    with pytest.raises(EdgeAIError) as err:
        deploy(env, 2, k=2)
    assert err.value.details["rolled_back"] is True
    assert err.value.details["active_version"] == 1
    assert "broken on purpose" in err.value.msg
    assert sorted(os.listdir(env["repo"] / "scale")) == ["1", "config.pbtxt"]
    assert env["server"].loaded["scale"] == (1, 1.0)
    response, _ms = InferenceClient(env["url"]).infer("scale", params(env)["smoke_test"]["inputs"])
    assert response["outputs"][0]["data"] == [1, 2]


def test_smoke_test_mismatch_rolls_back(env):
    stage(env, 1, "1")
    stage(env, 2, "3")  # loads fine but answers x*3
    deploy(env, 1, k=1)
    with pytest.raises(EdgeAIError, match=r"smoke test .* OUTPUT0\[0\] = 3.0, expected 2") as err:
        deploy(env, 2, k=2)
    assert err.value.details["rolled_back"] is True
    assert env["server"].loaded["scale"] == (1, 1.0)


def test_first_deployment_failure_leaves_nothing(env):
    stage(env, 1, "FAIL")
    with pytest.raises(EdgeAIError, match="nothing to roll back to") as err:
        deploy(env, 1)
    assert err.value.details["rolled_back"] is False
    assert not (env["repo"] / "scale").exists()


def test_rolled_back_state_and_absent(env):
    stage(env, 1, "1")
    stage(env, 2, "2")
    with pytest.raises(EdgeAIError, match="nothing to roll back to"):
        InferenceModel(params(env, state="rolled_back")).run()
    deploy(env, 1, k=1)
    deploy(env, 2, k=2)
    back = InferenceModel(params(env, state="rolled_back")).run()
    assert (back["active_version"], back["previous_version"]) == (1, 2)
    assert env["server"].loaded["scale"] == (1, 1.0)
    assert InferenceModel(params(env, state="absent"), check_mode=True).run()["changed"] is True
    assert (env["repo"] / "scale").exists()
    gone = InferenceModel(params(env, state="absent")).run()
    assert gone["changed"] is True and not (env["repo"] / "scale").exists()
    assert "scale" not in env["server"].loaded
    assert InferenceModel(params(env, state="absent")).run()["changed"] is False


def test_config_from_dict_is_validated_before_anything_changes(env):
    stage(env, 1, "1")
    bad = {"backend": "python", "input": [{"name": "INPUT0", "data_type": "FP32", "dims": [-1]}]}
    with pytest.raises(EdgeAIError, match="data_type"):
        deploy(env, 1, config=bad)
    assert not (env["repo"] / "scale").exists()
    good = {"backend": "python", "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [-1]}],
            "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [-1]}]}
    result = deploy(env, 1, config=good)
    assert result["config_source"] == "dict"
    assert "version_policy" in (env["repo"] / "scale" / "config.pbtxt").read_text()


def test_unstaged_version_is_refused(env):
    with pytest.raises(EdgeAIError, match="not staged"):
        deploy(env, 7)


def test_any_successful_inference_smoke_uses_metadata(env):
    stage(env, 1, "1")
    p = params(env, version=1)
    p["smoke_test"] = {"enabled": True, "inputs": None, "expected_outputs": None, "tolerance": 1e-5,
                       "relative_tolerance": 0.0, "requests": 2}
    assert InferenceModel(p).run()["smoke_latency_ms"] > 0


def test_compare_outputs_tolerances():
    response = {"outputs": [{"name": "y", "shape": [2], "data": [1.0, 2.0005]}]}
    assert compare_outputs(response, [{"name": "y", "data": [1, 2]}], 1e-3, 0) == []
    assert compare_outputs(response, [{"name": "y", "data": [1, 2]}], 1e-5, 0)
    assert compare_outputs(response, [{"name": "y", "data": [1, 2], "tolerance": 0.01}], 0, 0) == []
    assert compare_outputs(response, [{"name": "y", "data": [1, 2]}], 0, 1e-3) == []
    assert compare_outputs(response, [{"name": "z", "data": [1]}], 1, 0) == ["output z missing"]
    assert compare_outputs(response, [{"name": "y", "data": [1]}], 1, 0)
    assert compare_outputs(response, [{"name": "y", "data": [1, 2], "shape": [1, 2]}], 1, 0)


def test_server_info_tolerates_missing_statistics(env):
    stage(env, 1, "1")
    deploy(env, 1)
    info = ServerInfo({"url": env["url"], "timeout": 5.0, "validate_certs": True, "ca_path": None, "token": None,
                       "gather": ["health", "metadata", "index", "stats"], "models": None,
                       "fail_unreachable": False}).run()
    assert info["live"] is True and info["ready"] is True
    assert info["ready_models"] == ["scale"]
    assert info["stats"] == {"scale": None}
    assert info["stats_supported"] is False


def test_server_info_unreachable(env):
    base = {"url": "http://127.0.0.1:9", "timeout": 2.0, "validate_certs": True, "ca_path": None, "token": None,
            "gather": ["health"], "models": None, "fail_unreachable": False}
    assert ServerInfo(base).run()["live"] is False
    with pytest.raises(EdgeAIError, match="not live"):
        ServerInfo(dict(base, fail_unreachable=True)).run()


def test_version_policy_that_excludes_the_version_is_refused(env):
    stage(env, 2, "2")
    config = {"backend": "python", "version_policy": {"specific": {"versions": [1]}},
              "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [-1]}],
              "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [-1]}]}
    with pytest.raises(EdgeAIError, match="serves versions"):
        deploy(env, 2, config=config)
    assert not (env["repo"] / "scale").exists()
