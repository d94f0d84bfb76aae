"""The same protocol through tritonclient.http (JSON and binary tensors, repository API)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from litert_testlib import Server, make_repo
from tritonclient.utils import InferenceServerException

from litert_server.testmodels import make_triton_model


def _infer(
    client: httpclient.InferenceServerClient, model: str, x: np.ndarray, binary: bool, version: str = ""
) -> httpclient.InferResult:
    inp = httpclient.InferInput("x", list(x.shape), "FP32" if x.dtype == np.float32 else "UINT8")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = httpclient.InferRequestedOutput("y", binary_data=binary)
    return client.infer(model, [inp], model_version=version, outputs=[out])


@pytest.mark.parametrize("binary", [False, True])
def test_infer(server: Server, binary: bool) -> None:
    client = httpclient.InferenceServerClient(server.address)
    x = np.array([[1, 2, 3, 4]], np.float32)
    res = _infer(client, "float_model", x, binary)
    np.testing.assert_allclose(res.as_numpy("y"), x * 2 + 1)
    assert res.get_response()["model_version"] == "1"
    q = np.array([[0, 10, 20, 250]], np.uint8)
    assert _infer(client, "uint8_model", q, binary).as_numpy("y").tolist() == [[2, 12, 22, 252]]
    # no outputs requested: all outputs come back
    inp = httpclient.InferInput("x", [1, 4], "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    np.testing.assert_allclose(client.infer("float_model", [inp]).as_numpy("y"), x * 2 + 1)


def test_metadata(server: Server) -> None:
    client = httpclient.InferenceServerClient(server.address)
    assert client.is_server_live() and client.is_server_ready()
    assert client.get_server_metadata()["name"] == "litert-server"
    meta = client.get_model_metadata("float_model")
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [1, 4]}]
    assert meta["accelerator"] == "cpu"
    assert client.is_model_ready("float_model") and not client.is_model_ready("edgetpu_model")
    assert client.get_model_config("float_model")["max_batch_size"] == 0
    stats = client.get_inference_statistics("float_model")["model_stats"]
    assert stats and stats[0]["name"] == "float_model"


def test_errors(server: Server) -> None:
    client = httpclient.InferenceServerClient(server.address)
    with pytest.raises(InferenceServerException, match="unknown model"):
        client.get_model_metadata("nope")
    with pytest.raises(InferenceServerException, match="shape"):
        _infer(client, "float_model", np.zeros((2, 4), np.float32), True)
    with pytest.raises(InferenceServerException, match="datatype UINT8 does not match"):
        _infer(client, "float_model", np.zeros((1, 4), np.uint8), True)


def test_repository(server_factory: Callable[..., Server], tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    srv = server_factory(repo=repo)
    client = httpclient.InferenceServerClient(srv.address)
    names = {m["name"] for m in client.get_model_repository_index()}
    assert names == {"float_model", "uint8_model", "edgetpu_model"}
    client.load_model("float_model")
    assert client.is_model_ready("float_model")
    make_triton_model(repo, "float_model", 2, "float", scale=10.0, bias=0.0)
    client.load_model("float_model")
    x = np.array([[1, 2, 3, 4]], np.float32)
    np.testing.assert_allclose(_infer(client, "float_model", x, True).as_numpy("y"), x * 10)
    with pytest.raises(InferenceServerException, match="no Edge TPU is visible"):
        client.load_model("edgetpu_model")
    client.unload_model("float_model")
    assert not client.is_model_ready("float_model")
    ready = client.get_model_repository_index()
    assert all(m.get("state") != "READY" for m in ready)
