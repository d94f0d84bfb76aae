"""Triton in a lab device: the device's own Docker engine pulls the image from the lab registry
(TLS from the lab CA, htpasswd auth), the server runs with explicit model control, and
tritonclient (through an SSH tunnel on loopback) loads a model and checks an inference."""

from __future__ import annotations

import shlex
import time
import uuid

import numpy as np
import pytest
from edgeai_lab.access import REPO as ROOT
from edgeai_lab.access import devices_by

pytestmark = [pytest.mark.lab, pytest.mark.docker]

tritonclient_http = pytest.importorskip("tritonclient.http")  # a pinned dev requirement: a skip here is loud
DEVICE_PORT = 18000  # inside the device, on its loopback; not the port a deployed Triton uses


@pytest.fixture
def triton_on_device(lab, lab_ssh, registry_credentials):
    if "tritonserver" not in lab["images"]:
        pytest.fail(f"the lab has no tritonserver image: {lab['skipped_images'].get('tritonserver')}")
    device = devices_by(lab, platform="jetson")[0]
    ref = lab["images"]["tritonserver"]["ref"]
    name = f"lab-triton-test-{uuid.uuid4().hex[:6]}"
    repo = f"/tmp/{name}-models"
    # a login of the test's own: the device's engine keeps the one bootstrap.yml gave it
    docker = f"DOCKER_CONFIG=/tmp/{name}-docker docker"
    lab_ssh(device, f"{docker} login {lab['registry']['host']} -u {shlex.quote(registry_credentials['username'])} "
                    "--password-stdin", input=registry_credentials["password"])
    try:
        lab_ssh(device, f"{docker} pull -q {ref}", timeout=600)
        # the example model, shipped as version 3 so that OUTPUT0 = 3 * INPUT0
        model_py = (ROOT / "images/tritonserver/models/scale/1/model.py").read_text()
        config = (ROOT / "images/tritonserver/models/scale/config.pbtxt").read_text()
        lab_ssh(device, f"mkdir -p {repo}/scale/3 && cat > {repo}/scale/config.pbtxt", input=config)
        lab_ssh(device, f"cat > {repo}/scale/3/model.py && chmod -R a+rX {repo}", input=model_py)
        lab_ssh(device, f"docker run -d --name {name} -p 127.0.0.1:{DEVICE_PORT}:8000 "
                        f"-v {repo}:/models:ro {ref}")
        yield device, name
    finally:
        lab_ssh(device, f"docker rm -f {name} >/dev/null 2>&1; rm -rf {repo} /tmp/{name}-docker", check=False)


def test_triton_in_device_engine_loads_model_and_infers(lab, lab_ssh, lab_tunnel, triton_on_device):
    device, name = triton_on_device
    # the image really came from the lab registry, over TLS with auth
    pulled = lab_ssh(device, f"docker inspect --format '{{{{.Config.Image}}}}' {name}").stdout.strip()
    assert pulled.startswith("registry.edgeai.lab:5443/edgeai/tritonserver:")
    with lab_tunnel(device, DEVICE_PORT) as port:
        client = tritonclient_http.InferenceServerClient(url=f"127.0.0.1:{port}")
        deadline = time.monotonic() + 90
        while True:
            try:
                if client.is_server_ready():
                    break
            except Exception:
                pass
            if time.monotonic() > deadline:
                logs = lab_ssh(device, f"docker logs --tail 50 {name}", check=False)
                pytest.fail(f"tritonserver not ready in 90s:\n{logs.stdout}{logs.stderr}")
            time.sleep(1)
        # explicit model control: nothing loaded until asked
        assert not client.is_model_ready("scale")
        index = {m["name"]: m for m in client.get_model_repository_index()}
        assert "scale" in index and index["scale"].get("state") != "READY"
        client.load_model("scale")
        assert client.is_model_ready("scale")
        x = np.array([1.0, 2.5, -4.0], dtype=np.float32)
        inp = tritonclient_http.InferInput("INPUT0", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        result = client.infer("scale", [inp], outputs=[tritonclient_http.InferRequestedOutput("OUTPUT0")])
        np.testing.assert_allclose(result.as_numpy("OUTPUT0"), 3 * x)
        assert result.get_response()["model_version"] == "3"
        client.unload_model("scale")
        deadline = time.monotonic() + 30
        while client.is_model_ready("scale") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not client.is_model_ready("scale")
        client.close()
