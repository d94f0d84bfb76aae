"""Unit tests: config parsing, version policy, delegate selection, request decoding, settings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from litert_testlib import SRC

from litert_server.config import load_settings
from litert_server.errors import BadRequest, LoadError
from litert_server.modelconfig import config_from_json, config_from_pbtxt, parse_pbtxt
from litert_server.protocol import decode_request, encode_response
from litert_server.repository import Repository
from litert_server.runtime import choose_placement, find_edgetpus, model_custom_ops
from litert_server.testmodels import make_edgetpu_model, make_float_model, make_triton_model, make_uint8_model

PBTXT = """
name: "m"   # a comment
platform: "tflite"
max_batch_size: 8
input [ { name: "a", data_type: TYPE_FP32, dims: [ 3, 4 ] }, { name: "b" data_type: TYPE_INT8 dims: 2 dims: 3 } ]
output { name: "o" data_type: TYPE_UINT8 dims: [ -1 ] }
version_policy: { specific: { versions: [ 1, 3 ] } }
instance_group [ { kind: KIND_CPU count: 1 } ]
"""


def test_pbtxt_subset() -> None:
    cfg = config_from_pbtxt(PBTXT, "m")
    assert cfg.max_batch_size == 8
    assert [(t.name, t.datatype, t.dims) for t in cfg.inputs] == [("a", "FP32", (3, 4)), ("b", "INT8", (2, 3))]
    assert [(t.name, t.datatype, t.dims) for t in cfg.outputs] == [("o", "UINT8", (-1,))]
    assert cfg.policy == "specific" and cfg.versions == (1, 3)
    assert parse_pbtxt('a: "x\\"y" b < c: 1 >') == {"a": ['x"y'], "b": [{"c": [1]}]}


@pytest.mark.parametrize(
    ("policy", "available", "expected"),
    [
        ("", [1, 2, 3], [3]),
        ("version_policy: { latest: { num_versions: 2 } }", [1, 2, 3, 10], [3, 10]),
        ("version_policy: { all: {} }", [1, 2, 3], [1, 2, 3]),
        ("version_policy: { specific: { versions: 2 } }", [1, 2, 3], [2]),
    ],
)
def test_version_policy(policy: str, available: list[int], expected: list[int]) -> None:
    assert config_from_pbtxt(f'name: "m" {policy}', "m").select_versions(available) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('name: "other"', "does not match"),
        ('platform: "onnxruntime_onnx"', "not served here"),
        ('input [ { name: "a" data_type: TYPE_COMPLEX dims: [1] } ]', "unsupported data_type"),
        ("version_policy: { latest: { num_versions: 0 } }", ">= 1"),
        ('name: "m" input [ { name: "a" ', "missing"),
    ],
)
def test_bad_configs(text: str, message: str) -> None:
    with pytest.raises(LoadError, match=message):
        config_from_pbtxt(text, "m")


def test_specific_version_missing() -> None:
    cfg = config_from_json(json.dumps({"version_policy": {"specific": {"versions": [4]}}}), "m")
    with pytest.raises(LoadError, match=r"not in the repository: \[4\]"):
        cfg.select_versions([1, 2])


def _fake_root(tmp: Path, apex: bool = False, usb: tuple[str, str] | None = None) -> Path:
    root = tmp / "root"
    (root / "dev").mkdir(parents=True)
    devs = root / "sys" / "bus" / "usb" / "devices"
    (devs / "1-1").mkdir(parents=True)  # an unrelated USB device
    (devs / "1-1" / "idVendor").write_text("046d\n")
    (devs / "1-1" / "idProduct").write_text("c52b\n")
    if apex:
        (root / "dev" / "apex_0").write_text("")
    if usb:
        (devs / "2-1").mkdir()
        (devs / "2-1" / "idVendor").write_text(usb[0] + "\n")
        (devs / "2-1" / "idProduct").write_text(usb[1] + "\n")
    return root


def test_find_edgetpus(tmp_path: Path) -> None:
    assert find_edgetpus(_fake_root(tmp_path / "none")) == []
    assert find_edgetpus(_fake_root(tmp_path / "apex", apex=True)) == ["/dev/apex_0"]
    assert find_edgetpus(_fake_root(tmp_path / "usb1", usb=("18d1", "9302"))) == ["usb:2-1:18d1:9302"]
    assert find_edgetpus(_fake_root(tmp_path / "usb2", usb=("1a6e", "089a"))) == ["usb:2-1:1a6e:089a"]
    assert find_edgetpus(tmp_path / "missing") == []


def test_delegate_selection(tmp_path: Path) -> None:
    tpu = make_edgetpu_model(tmp_path / "tpu.tflite").read_bytes()
    cpu = make_float_model(tmp_path / "cpu.tflite").read_bytes()
    assert model_custom_ops(tpu) == {"edgetpu-custom-op"}
    assert model_custom_ops(cpu) == set()
    no_tpu, with_tpu = _fake_root(tmp_path / "a"), _fake_root(tmp_path / "b", apex=True)

    p = choose_placement(tpu, with_tpu, "libedgetpu.so.1")
    assert (p.accelerator, p.delegate, p.devices) == ("edgetpu", "libedgetpu.so.1", ("/dev/apex_0",))
    p = choose_placement(cpu, with_tpu, "libedgetpu.so.1")
    assert (p.accelerator, p.delegate) == ("cpu", None)
    assert "Edge TPU visible" in p.reason
    p = choose_placement(cpu, no_tpu, "libedgetpu.so.1")
    assert (p.accelerator, p.delegate) == ("cpu", None)
    with pytest.raises(LoadError, match=r"compiled for the Edge TPU .* no Edge TPU is visible"):
        choose_placement(tpu, no_tpu, "libedgetpu.so.1")
    with pytest.raises(LoadError, match=r"not a \.tflite model"):
        choose_placement(b"garbage!" * 4, no_tpu, "libedgetpu.so.1")


# ai-edge-litert's Delegate.__del__ trips over its own failed __init__ (upstream bug, harmless)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_edgetpu_delegate_missing_library(tmp_path: Path) -> None:
    """A TPU is visible but libedgetpu cannot be loaded: a clear load error, not a crash."""
    make_triton_model(tmp_path / "repo", "tpu", 1, "edgetpu")
    repo = Repository(
        tmp_path / "repo",
        device_root=str(_fake_root(tmp_path, apex=True)),
        edgetpu_library="libedgetpu-does-not-exist.so.1",
    )
    with pytest.raises(LoadError, match=r"cannot load the Edge TPU delegate libedgetpu-does-not-exist\.so\.1"):
        repo.load("tpu")


def test_generated_models_compute(tmp_path: Path) -> None:
    repo = Repository(tmp_path)
    make_triton_model(tmp_path, "f", 1, "float", scale=3.0, bias=-1.0, shape=(2, 3))
    make_triton_model(tmp_path, "u", 1, "uint8", bias=1.0, scale=0.5, zero_point=10)
    repo.load("f")
    repo.load("u")
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_allclose(repo.get("f").infer({"x": x}, ["y"]).outputs["y"], x * 3 - 1)
    q = np.array([[0, 10, 20, 250]], np.uint8)
    # real(y) = real(x) + 1 with scale 0.5: q_out = q_in + 2 (saturating)
    assert repo.get("u").infer({"x": q}, ["y"]).outputs["y"].tolist() == [[2, 12, 22, 252]]
    assert repo.get("u").inputs[0].datatype == "UINT8"
    with pytest.raises(ValueError, match="uint8"):
        make_uint8_model(tmp_path / "x.tflite", bias=1000.0)


def test_decode_json_and_binary() -> None:
    req = decode_request(
        json.dumps(
            {"id": "7", "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [[1, 2]]}]}
        ).encode(),
        None,
    )
    assert req.id == "7" and req.inputs["x"].tolist() == [[1.0, 2.0]] and req.outputs is None
    blob = np.array([[5, 6]], np.int32).tobytes()
    head = json.dumps(
        {
            "inputs": [
                {"name": "x", "datatype": "INT32", "shape": [1, 2], "parameters": {"binary_data_size": len(blob)}}
            ],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
        }
    ).encode()
    req = decode_request(head + blob, len(head))
    assert req.inputs["x"].tolist() == [[5, 6]] and req.binary == {"y": True}
    body, hlen = encode_response("m", 1, req, {"y": np.array([[1.5]], np.float32)}, ["y"])
    assert hlen is not None
    meta = json.loads(body[:hlen])
    assert meta["outputs"][0]["parameters"]["binary_data_size"] == 4
    assert np.frombuffer(body[hlen:], np.float32).tolist() == [1.5]


@pytest.mark.parametrize(
    ("req", "message"),
    [
        ({"inputs": []}, "non-empty"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1]}]}, "shape .* needs 2"),
        ({"inputs": [{"name": "x", "datatype": "UINT8", "shape": [1], "data": [300]}]}, "does not convert"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": ["a"]}]}, "does not convert"),
        ({"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1], "data": ["a"]}]}, "unsupported datatype"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1], "data": [1]}]}, "non-negative"),
        (
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": 4}}]},
            "exceeds the binary data",
        ),
    ],
)
def test_decode_errors(req: dict[str, object], message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        decode_request(json.dumps(req).encode(), None)
    with pytest.raises(BadRequest, match="not valid JSON"):
        decode_request(b"{", None)


def test_settings_precedence(tmp_path: Path) -> None:
    cfg = tmp_path / "s.yml"
    cfg.write_text("port: 9000\nmetrics_port: 9002\nload_models: [a, b]\nhost: 0.0.0.0\n")
    s = load_settings(["--config", str(cfg)], env={})
    assert (s.port, s.metrics_port, s.load_models, s.host) == (9000, 9002, ["a", "b"], "0.0.0.0")
    s = load_settings(["--config", str(cfg)], env={"EDGEAI_LITERT_PORT": "9100", "EDGEAI_LITERT_LOAD_MODELS": "c"})
    assert (s.port, s.load_models) == (9100, ["c"])
    s = load_settings(["--port", "9200"], env={"EDGEAI_LITERT_CONFIG": str(cfg), "EDGEAI_LITERT_PORT": "9100"})
    assert (s.port, s.metrics_port) == (9200, 9002)
    assert load_settings([], env={}).host == "127.0.0.1"
    tok = tmp_path / "token"
    tok.write_text("s3cret\n")
    assert load_settings(["--token-file", str(tok)], env={}).auth_token() == "s3cret"
    assert "s3cret" not in repr(load_settings([], env={"EDGEAI_LITERT_TOKEN": "s3cret"}))
    cfg.write_text("port: [\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_settings(["--config", str(cfg)], env={})
    cfg.write_text("bogus: 1\n")
    with pytest.raises(ValueError, match="unknown setting 'bogus'"):
        load_settings(["--config", str(cfg)], env={})


def test_testmodels_cli(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "litert_server.testmodels", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(SRC)},
        check=True,
    )
    assert "float_model/2/model.tflite" in out.stdout
    repo = Repository(tmp_path / "r")
    assert repo.load("float_model") == [2]
    assert repo.load("uint8_model") == [1]
    with pytest.raises(LoadError, match="no Edge TPU is visible"):
        repo.load("edgetpu_model")


def test_edgetpu_delegate_wiring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TPU visible + compiled model: the delegate is loaded and handed to the interpreter.

    libedgetpu and the TPU are stand-ins here: load_delegate returns a marker and the
    interpreter runs a CPU uint8 model of the same signature in place of the compiled one.
    """
    from ai_edge_litert.interpreter import Interpreter

    from litert_server import runtime

    stand_in = make_uint8_model(tmp_path / "stand_in.tflite", bias=1.0 / 255, scale=1.0 / 255, zero_point=0)
    marker = object()
    calls: list[tuple[str, object]] = []

    def fake_load_delegate(library: str) -> object:
        calls.append(("load_delegate", library))
        return marker

    def fake_interpreter(model_content: bytes, experimental_delegates: list[object] | None, num_threads: int) -> object:
        assert "edgetpu-custom-op" in model_custom_ops(model_content)
        calls.append(("interpreter", experimental_delegates))
        return Interpreter(model_path=str(stand_in))

    monkeypatch.setattr(runtime, "load_delegate", fake_load_delegate)
    monkeypatch.setattr(runtime, "Interpreter", fake_interpreter)
    make_triton_model(tmp_path / "repo", "tpu", 1, "edgetpu")
    repo = Repository(tmp_path / "repo", device_root=str(_fake_root(tmp_path, usb=("18d1", "9302"))), pool_size=2)
    assert repo.load("tpu") == [1]
    lv = repo.get("tpu")
    assert lv.metadata()["accelerator"] == "edgetpu" and lv.metadata()["delegate"] == "libedgetpu.so.1"
    assert lv.pool_size == 1
    assert calls == [("load_delegate", "libedgetpu.so.1"), ("interpreter", [marker])]
    assert lv.infer({"x": np.array([[0, 1, 2, 3]], np.uint8)}, ["y"]).outputs["y"].tolist() == [[1, 2, 3, 4]]
