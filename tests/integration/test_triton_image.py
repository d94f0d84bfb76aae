# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The CPU stand-in Triton image (images/tritonserver): what the role and the lab rely on."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import time
import urllib.error
import urllib.request

import pytest
from edgeai_lab.litert import wait_ready
from edgeai_lab.loopback import free_port
from edgeai_lab.real_models import fetch
from test_model_serving import ROOT, TRITON_IMAGE, TRITON_MODELS, _triton_image

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def container(tmp_path_factory):
    _triton_image()
    repo = tmp_path_factory.mktemp("repo")
    shutil.copytree(TRITON_MODELS / "failing", repo / "failing")
    for path in [repo, *repo.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    port, metrics = free_port(), free_port()
    cid = subprocess.run(["docker", "run", "-d", "--label", "edgeai.test=1", "-p", f"127.0.0.1:{port}:8000",
                          "-p", f"127.0.0.1:{metrics}:8002", "-v", f"{repo}:/models", TRITON_IMAGE],
                         capture_output=True, text=True, check=True).stdout.strip()
    try:
        wait_ready(f"http://127.0.0.1:{port}")
        yield {"id": cid, "url": f"http://127.0.0.1:{port}", "metrics": f"http://127.0.0.1:{metrics}"}
    finally:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True, check=False)


def inspect(what: str) -> dict:
    out = subprocess.run(["docker", "inspect", what], capture_output=True, text=True, check=True).stdout
    return json.loads(out)[0]


def test_image_is_labelled_as_stand_in_and_runs_explicit_mode_unprivileged():
    config = inspect(TRITON_IMAGE)["Config"]
    assert "stand-in" in config["Labels"]["org.opencontainers.image.description"]
    assert config["Labels"]["io.edgeai.stand-in-for"].startswith("nvcr.io/nvidia/tritonserver")
    assert "--model-control-mode=explicit" in config["Entrypoint"]
    assert "--model-repository=/models" in config["Entrypoint"]
    assert config["User"] == "triton-server"
    assert config["Cmd"] == ["--strict-readiness=false"]
    assert set(config["ExposedPorts"]) == {"8000/tcp", "8001/tcp", "8002/tcp"}
    assert "/v2/health/ready" in " ".join(config["Healthcheck"]["Test"])


def test_server_starts_empty_and_reports_itself(container):
    with urllib.request.urlopen(container["url"] + "/v2", timeout=5) as resp:
        meta = json.loads(resp.read())
    assert meta["name"] == "triton" and "model_repository" in meta["extensions"]
    req = urllib.request.Request(container["url"] + "/v2/repository/index", data=b"{}", method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        index = json.loads(resp.read())
    # explicit model control: the repository's models are listed, none is loaded
    assert [entry["name"] for entry in index] == ["failing"]
    assert all(entry.get("state") != "READY" for entry in index)


def test_metrics_use_triton_names(container):
    with urllib.request.urlopen(container["metrics"] + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    assert "nv_cpu_utilization" in text or "nv_inference_request_success" in text


def test_a_model_that_fails_to_load_does_not_make_the_server_unready(container):
    req = urllib.request.Request(container["url"] + "/v2/repository/models/failing/load", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=60)
    assert err.value.code == 400
    assert "broken on purpose" in err.value.read().decode()
    with urllib.request.urlopen(container["url"] + "/v2/health/ready", timeout=5) as resp:
        assert resp.status == 200


def test_healthcheck_is_healthy_even_after_a_failed_load(container):
    deadline = time.monotonic() + 60
    status = None
    while time.monotonic() < deadline:
        status = inspect(container["id"])["State"]["Health"]["Status"]
        if status == "healthy":
            break
        time.sleep(1)
    assert status == "healthy"


# -- the onnxruntime backend stand-in -------------------------------------------------------
def _image_with_onnxruntime() -> None:
    """The image under test, rebuilt when an older build lacks the onnxruntime stand-in."""
    _triton_image()
    labels = inspect(TRITON_IMAGE)["Config"]["Labels"] or {}
    if labels.get("io.edgeai.stand-in-backends") != "onnxruntime":
        build = subprocess.run([str(ROOT / "images" / "tritonserver" / "build.sh"), TRITON_IMAGE],
                               capture_output=True, text=True, check=False,
                               env=dict(os.environ, PIP=str(ROOT / ".venv" / "bin" / "pip")))
        if build.returncode:
            pytest.fail(f"building {TRITON_IMAGE} failed:\n{build.stdout[-2000:]}\n{build.stderr[-2000:]}")


@pytest.fixture(scope="module")
def onnx_models(tmp_path_factory):
    """A model repository holding a real third-party ONNX model (PaddleOCR's text direction
    classifier from the rapidocr-onnxruntime wheel) three ways: as the release builder lays it
    out (backend onnxruntime, <v>/model.onnx), under another file name (default_model_filename),
    and configured by platform only (onnxruntime_onnx), as Triton's own examples are."""
    from ansible_collections.edgeai.fleet.plugins.plugin_utils._release_build import build_release

    model = fetch("ocr_direction")
    out = tmp_path_factory.mktemp("release")
    built = build_release(model=str(model), name="ocr", version=2, out=str(out), platforms=["jetson"],
                          input_shapes={"x": [1, 3, 48, 192]})
    repo = tmp_path_factory.mktemp("onnx-repo")
    with tarfile.open(built["artifacts"]["jetson"]["path"]) as tar:
        tar.extractall(repo, filter="data")
    config = (repo / "ocr" / "config.pbtxt").read_text()
    named = repo / "ocr_named"
    (named / "1").mkdir(parents=True)
    shutil.copy(model, named / "1" / "classifier.onnx")
    (named / "config.pbtxt").write_text(config.replace('name: "ocr"', 'name: "ocr_named"')
                                        + 'default_model_filename: "classifier.onnx"\n')
    by_platform = repo / "ocr_platform"
    (by_platform / "1").mkdir(parents=True)
    shutil.copy(model, by_platform / "1" / "model.onnx")
    (by_platform / "config.pbtxt").write_text(config.replace('name: "ocr"', 'name: "ocr_platform"')
                                              .replace('backend: "onnxruntime"', 'platform: "onnxruntime_onnx"'))
    for path in [repo, *repo.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return {"repo": repo, "model": model, "smoke": json.loads((repo / "ocr" / "smoke_test.json").read_text())}


@pytest.fixture(scope="module")
def onnx_container(onnx_models):
    _image_with_onnxruntime()
    port = free_port()
    cid = subprocess.run(["docker", "run", "-d", "--label", "edgeai.test=1", "-p", f"127.0.0.1:{port}:8000",
                          "-v", f"{onnx_models['repo']}:/models", TRITON_IMAGE],
                         capture_output=True, text=True, check=True).stdout.strip()
    try:
        wait_ready(f"http://127.0.0.1:{port}")
        yield {"id": cid, "url": f"http://127.0.0.1:{port}"}
    finally:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True, check=False)


def _post(url: str, body: dict, timeout: float = 120) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else {}


def test_image_says_which_backends_it_carries():
    _image_with_onnxruntime()
    labels = inspect(TRITON_IMAGE)["Config"]["Labels"]
    # machine-readable: the backends a release's requires.backends is checked against
    assert labels["io.edgeai.backends"].split() == ["python", "onnxruntime"]
    assert labels["io.edgeai.stand-in-backends"] == "onnxruntime"
    assert "stand-in onnxruntime backend" in labels["org.opencontainers.image.description"]


@pytest.mark.parametrize("name", ["ocr", "ocr_named", "ocr_platform"])
def test_a_real_onnx_model_serves_through_the_onnxruntime_backend(onnx_container, onnx_models, name):
    import numpy as np
    import onnxruntime as ort
    from ansible_collections.edgeai.fleet.plugins.module_utils._inference_model import compare_outputs

    base = onnx_container["url"]
    _post(f"{base}/v2/repository/models/{name}/load", {})
    with urllib.request.urlopen(f"{base}/v2/models/{name}", timeout=10) as resp:
        meta = json.loads(resp.read())
    assert meta["platform"] == "onnxruntime_onnx"
    assert [(i["name"], i["datatype"], i["shape"]) for i in meta["inputs"]] == [("x", "FP32", [-1, 3, -1, -1])]

    smoke = onnx_models["smoke"]
    answer = _post(f"{base}/v2/models/{name}/infer", {"inputs": smoke["inputs"]})
    (inp,) = smoke["inputs"]
    feed = np.array(inp["data"], dtype=np.float32).reshape(inp["shape"])
    session = ort.InferenceSession(str(onnx_models["model"]), providers=["CPUExecutionProvider"])
    (want,) = session.run(None, {"x": feed})
    (got,) = answer["outputs"]
    assert got["shape"] == list(want.shape) and got["datatype"] == "FP32"
    assert np.allclose(np.array(got["data"], dtype=np.float32).reshape(want.shape), want, atol=1e-5, rtol=1e-5)
    # and the device-side smoke test of the artifact passes against the server's answer
    assert compare_outputs(answer, smoke["expected_outputs"], 0, smoke["relative_tolerance"]) == []
    # another input gives another answer (the model really runs)
    other = _post(f"{base}/v2/models/{name}/infer",
                  {"inputs": [dict(inp, data=[0.0] * len(inp["data"]))]})
    assert other["outputs"][0]["data"] != got["data"]


def test_a_request_the_model_refuses_is_an_error_and_the_model_keeps_serving(onnx_container, onnx_models):
    base = onnx_container["url"]
    _post(f"{base}/v2/repository/models/ocr/load", {})
    bad = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2, 48, 192], "data": [0.0] * (2 * 48 * 192)}]}
    with pytest.raises(urllib.error.HTTPError) as err:
        _post(f"{base}/v2/models/ocr/infer", bad)
    assert err.value.code == 400
    assert _post(f"{base}/v2/models/ocr/infer", {"inputs": onnx_models["smoke"]["inputs"]})["outputs"]
