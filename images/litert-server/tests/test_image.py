"""The container image: builds FROM the lab base, runs as non-root, serves through a loopback port mapping."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from litert_testlib import free_port

from litert_server.testmodels import make_triton_model

HERE = Path(__file__).resolve().parents[1]
TAG = "edgeai/litert-server:test"
pytestmark = pytest.mark.docker


def _docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def image() -> str:
    if shutil.which("docker") is None or _docker("version").returncode != 0:
        pytest.fail("the docker marker needs a running Docker engine (deselect with -m 'not docker')")
    env = {**os.environ, "PIP": f"{sys.executable} -m pip"}
    build = subprocess.run(
        [str(HERE / "build.sh"), TAG], capture_output=True, text=True, env=env, timeout=900, check=False
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    return TAG


def test_image_serves_through_loopback_mapping(image: str, tmp_path: Path) -> None:
    repo = tmp_path / "models"
    make_triton_model(repo, "float_model", 1, "float", scale=2.0, bias=1.0)
    for p in [tmp_path, *repo.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    port, mport = free_port(), free_port()
    name = f"litert-server-test-{os.getpid()}"
    run = _docker(
        "run",
        "-d",
        "--name",
        name,
        "-p",
        f"127.0.0.1:{port}:8000",
        "-p",
        f"127.0.0.1:{mport}:8002",
        "-v",
        f"{repo}:/models:ro",
        image,
        "--load-model",
        "float_model",
    )
    assert run.returncode == 0, run.stderr
    try:
        body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]})
        deadline = time.monotonic() + 60
        result = None
        while time.monotonic() < deadline and result is None:
            try:
                req = urllib.request.Request(
                    f"http://127.0.0.1:{port}/v2/models/float_model/infer", data=body.encode(), method="POST"
                )
                with urllib.request.urlopen(req, timeout=5) as resp:
                    result = json.loads(resp.read())
            except OSError:
                time.sleep(0.5)
        assert result is not None, _docker("logs", name).stderr[-2000:]
        assert result["outputs"][0]["data"] == [3.0, 5.0, 7.0, 9.0]
        assert _docker("exec", name, "id", "-u").stdout.strip() == "10001"
        health = ""
        while time.monotonic() < deadline and health != "healthy":
            health = _docker("inspect", "--format", "{{.State.Health.Status}}", name).stdout.strip()
            time.sleep(1)
        assert health == "healthy"
        logs = _docker("logs", name)
        first = json.loads(logs.stderr.splitlines()[0])
        assert first["msg"] == "listening" and first["host"] == "0.0.0.0"
        # inside the container metrics listen on all interfaces: the loopback mapping reaches them
        assert first["metrics_host"] == "0.0.0.0"
        with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5) as resp:
            assert b"nv_inference_request_success" in resp.read()
        # the image's config.pbtxt parser is the collection's file, unchanged
        show = "import sys, litert_server._pbtxt as m; sys.stdout.write(open(m.__file__).read())"
        shown = _docker("exec", name, "python3", "-c", show)
        assert shown.stdout == (HERE.parents[1] / "plugins" / "module_utils" / "_pbtxt.py").read_text()
    finally:
        _docker("rm", "-f", name)
