# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""roles/inference_server on this machine's Docker engine, for a simulated Jetson (device
facts read from the agx-orin lab profile, JetPack 6.0): the CPU stand-in Triton container is
run, a model is served from a file on the controller, a model update swaps inside the
running container, and only an image change recreates the container."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
from edgeai_lab.loopback import free_port
from test_model_serving import TRITON_IMAGE, LiteRT, Triton, _triton_image, infer

pytestmark = pytest.mark.docker
ROOT = Path(__file__).resolve().parents[2]


def playbook(tmp_path: Path, extra: dict) -> tuple[int, str]:
    play = tmp_path / "play.yml"
    play.write_text(json.dumps([{
        "name": "Inference server", "hosts": "localhost", "connection": "local", "gather_facts": False,
        "roles": [{"role": "edgeai.fleet.inference_server"}],
    }]))
    vars_file = tmp_path / "vars.json"
    vars_file.write_text(json.dumps(extra))
    python = ROOT / ".venv" / "bin" / "python"  # the Docker SDK that community.docker needs is in the venv
    proc = subprocess.run([str(ROOT / ".venv" / "bin" / "ansible-playbook"), "-i", "localhost,", str(play),
                           "-e", f"@{vars_file}", "-e", f"ansible_python_interpreter={python}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def recap_changed(output: str) -> int:
    line = [x for x in output.splitlines() if x.startswith("localhost") and "changed=" in x][-1]
    return int(line.split("changed=")[1].split()[0])


def container_id(name: str) -> str:
    return subprocess.run(["docker", "inspect", "-f", "{{.Id}}", name], capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.fixture
def role_env(tmp_path):
    _triton_image()
    name = f"edgeai-test-{uuid.uuid4().hex[:8]}"
    port = free_port()
    repo = tmp_path / "models"
    helper = Triton.__new__(Triton)  # only for its artifact() and expected()
    helper.work = tmp_path
    helper.inputs = [{"name": "INPUT0", "datatype": "FP32", "shape": [4], "data": [1, 2, 3, 4]}]
    env = {
        "name": name, "port": port, "url": f"http://127.0.0.1:{port}", "helper": helper,
        "vars": {
            "inference_server_device_root": str(ROOT / "tests" / "lab" / "profiles" / "agx-orin" / "root"),
            "inference_server_triton_images": {"6": TRITON_IMAGE},
            "inference_server_triton_runtime": "",
            "inference_server_container_name": name,
            "inference_server_http_port": port,
            "inference_server_metrics_port": 0,
            "inference_server_repository": str(repo),
            "inference_server_artifacts_dir": str(tmp_path / "artifacts"),
            "inference_server_memory": "1g",
            "inference_server_labels": {"edgeai.test": "1"},
            "inference_server_pull": "not_present",  # local images: no registry to pull from
        },
    }
    yield env
    subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
    second_tag = subprocess.run(["docker", "image", "inspect", TRITON_IMAGE + "-b"], capture_output=True, check=False)
    if second_tag.returncode == 0:
        subprocess.run(["docker", "image", "rm", TRITON_IMAGE + "-b"], capture_output=True, check=False)


def model(env, version):
    helper = env["helper"]
    artifacts = env.setdefault("artifacts", {})
    if version not in artifacts:  # made once: a new tar.gz would differ in its gzip timestamp
        artifacts[version] = str(helper.artifact(version))
    return {"name": "scale", "version": version, "artifact": {"src": artifacts[version]},
            "smoke_test": {"inputs": helper.inputs, "expected_outputs": helper.expected(version)}}


def test_role_runs_server_swaps_models_in_place_and_recreates_on_image_change(role_env):
    env = role_env
    rc, out = playbook(env["helper"].work, dict(env["vars"], inference_server_model=model(env, 1)))
    assert rc == 0, out[-4000:]
    first_id = container_id(env["name"])
    inspect = json.loads(subprocess.run(["docker", "inspect", env["name"]], capture_output=True, text=True,
                                        check=True).stdout)[0]
    assert inspect["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert inspect["HostConfig"]["Memory"] == 1024 ** 3
    assert "--model-control-mode=explicit" in inspect["Args"]
    assert any(m["Destination"] == "/models" and not m["RW"] for m in inspect["Mounts"])
    assert inspect["Config"]["Labels"]["io.edgeai.server-kind"] == "triton"
    assert infer(env["url"], env["helper"].inputs)["outputs"][0]["data"] == [1, 2, 3, 4]

    rc, out = playbook(env["helper"].work, dict(env["vars"], inference_server_model=model(env, 1)))
    assert rc == 0 and recap_changed(out) == 0, out[-4000:]

    rc, out = playbook(env["helper"].work, dict(env["vars"], inference_server_model=model(env, 2)))
    assert rc == 0, out[-4000:]
    assert container_id(env["name"]) == first_id  # a model change never recreates the container
    assert infer(env["url"], env["helper"].inputs)["outputs"][0]["data"] == [2, 4, 6, 8]

    subprocess.run(["docker", "tag", TRITON_IMAGE, TRITON_IMAGE + "-b"], check=True)
    rc, out = playbook(env["helper"].work, dict(env["vars"], inference_server_triton_images={"6": TRITON_IMAGE + "-b"}))
    assert rc == 0, out[-4000:]
    assert container_id(env["name"]) != first_id  # a server-image change does
    # the new container starts empty (explicit model control); the role reloads the model
    rc, out = playbook(env["helper"].work, dict(env["vars"], inference_server_triton_images={"6": TRITON_IMAGE + "-b"},
                                                inference_server_model=model(env, 2)))
    assert rc == 0, out[-4000:]
    assert infer(env["url"], env["helper"].inputs)["outputs"][0]["data"] == [2, 4, 6, 8]


def test_role_fails_early_for_a_jetpack_without_an_image(role_env, tmp_path):
    env = role_env
    rc, out = playbook(tmp_path, dict(env["vars"], inference_server_device_root=str(
        ROOT / "tests" / "lab" / "profiles" / "jetson-nano" / "root")))
    assert rc != 0
    assert "No Triton image for JetPack 4.6" in out
    assert subprocess.run(["docker", "inspect", env["name"]], capture_output=True, check=False).returncode != 0
    assert not os.path.exists(env["vars"]["inference_server_repository"])


LITERT_IMAGE = os.environ.get("EDGEAI_LITERT_IMAGE", "edgeai/litert-server:test")


def test_role_runs_the_litert_server_with_a_model(role_env):
    """The LiteRT path of the role (kind litert on a device without an Edge TPU node, so the
    container needs no device): same modules, same protocol."""
    if subprocess.run(["docker", "image", "inspect", LITERT_IMAGE], capture_output=True, check=False).returncode:
        build = subprocess.run(["sh", str(ROOT / "images" / "litert-server" / "build.sh"), LITERT_IMAGE],
                               capture_output=True, text=True, check=False,
                               env=dict(os.environ, PIP=f"{ROOT / '.venv' / 'bin' / 'python'} -m pip"))
        assert build.returncode == 0, build.stderr[-3000:]
    env = role_env
    helper = LiteRT.__new__(LiteRT)  # only for its artifact() and expected()
    helper.work = env["helper"].work
    helper.inputs = [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]
    model = {"name": "scale", "version": 3, "artifact": {"src": str(helper.artifact(3))},
             "smoke_test": {"inputs": helper.inputs, "expected_outputs": helper.expected(3)}}
    variables = dict(env["vars"], inference_server_kind="litert", inference_server_image=LITERT_IMAGE,
                     inference_server_device_root=str(ROOT / "tests" / "lab" / "profiles" / "generic" / "root"),
                     inference_server_model=model)
    rc, out = playbook(helper.work, variables)
    assert rc == 0, out[-4000:]
    inspect = json.loads(subprocess.run(["docker", "inspect", env["name"]], capture_output=True, text=True,
                                        check=True).stdout)[0]
    assert inspect["Config"]["Labels"]["io.edgeai.server-kind"] == "litert"
    assert infer(env["url"], helper.inputs)["outputs"][0]["data"] == [3, 6, 9, 12]
    rc, out = playbook(helper.work, variables)
    assert rc == 0 and recap_changed(out) == 0, out[-4000:]
