"""Unit tests of edgeai_lab.litert: our LiteRT server as a local process, and what any such server process
gets (readiness by GET, the end of its log when it fails, stop with whatever it forked). No Docker."""

from __future__ import annotations

import os
import sys

import pytest
from edgeai_lab.litert import ServerProcess, litert_process
from litert_server.testmodels import make_triton_model
from webhook_receiver.testing import free_port, http_json


def test_the_litert_server_serves_the_repository_and_stops(tmp_path, monkeypatch):
    # the server reads its settings from EDGEAI_LITERT_*: one of this environment's must not reach it
    monkeypatch.setenv("EDGEAI_LITERT_TOKEN", "a-token-the-caller-does-not-send")
    repo = tmp_path / "models"
    make_triton_model(repo, "float_model", 1, "float")
    server = litert_process(tmp_path, repo, "--load-model", "*").wait_ready(("/v2/models/float_model/ready",))
    try:
        status, answer = http_json("POST", f"{server.url}/v2/models/float_model/infer", {"inputs": [
            {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]})
        assert status == 200 and answer["outputs"][0]["data"] == [3.0, 5.0, 7.0, 9.0]  # y = 2x + 1
        assert os.getpgid(server.proc.pid) == server.proc.pid  # a session of its own
    finally:
        server.stop()
    assert server.proc.returncode is not None
    assert (tmp_path / "litert-server.log").read_text()


def test_a_server_that_exits_fails_at_once_with_the_end_of_its_log(tmp_path):
    argv = [sys.executable, "-c", "import sys; print('bad model repository /nowhere'); sys.exit(3)"]
    server = ServerProcess("broken", argv, tmp_path / "broken.log", free_port())
    with pytest.raises(RuntimeError) as err:
        server.wait_ready(timeout=30)
    assert "broken exited with 3" in str(err.value) and "bad model repository /nowhere" in str(err.value)


def test_a_server_that_never_answers_fails_after_the_timeout(tmp_path):
    server = ServerProcess("silent", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "silent.log",
                           free_port())
    try:
        with pytest.raises(RuntimeError, match=r"silent is not ready \(/v2/health/ready\) after 1 s"):
            server.wait_ready(timeout=1)
    finally:
        server.stop(grace=5)
    assert server.proc.returncode is not None
