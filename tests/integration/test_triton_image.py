# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The CPU stand-in Triton image (images/tritonserver): what the role and the lab rely on."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from test_model_serving import TRITON_IMAGE, TRITON_MODELS, _triton_image, free_port, wait_ready

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
