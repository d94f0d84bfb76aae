"""Each device runs the right server for its platform, and it serves version 1 of the demo model."""

import json

import pytest

testinfra_hosts = ["ansible://all"]


@pytest.fixture
def platform(host):
    return "jetson" if "platform_jetson" in host.ansible.get_variables()["group_names"] else "coral"


def test_the_server_kind_matches_the_platform(host, platform):
    labels = json.loads(host.check_output("docker inspect -f '{{json .Config.Labels}}' edgeai-inference"))
    assert labels["io.edgeai.server-kind"] == ("triton" if platform == "jetson" else "litert")
    restart = host.check_output("docker inspect -f '{{.HostConfig.RestartPolicy.Name}}' edgeai-inference")
    assert restart == "unless-stopped"


def test_version_1_answers(host, platform):
    if platform == "jetson":
        body = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [4], "data": [1, 2, 3, 4]}]}
    else:
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    cmd = host.run("curl -sf -H 'Content-Type: application/json' -d %s http://127.0.0.1:8000/v2/models/detector/infer",
                   json.dumps(body))
    assert cmd.rc == 0, cmd.stderr
    answer = json.loads(cmd.stdout)
    assert answer["model_version"] == "1"
    assert answer["outputs"][0]["data"] == [1.0, 2.0, 3.0, 4.0]


def test_the_server_listens_on_loopback_only(host):
    ports = host.check_output("docker port edgeai-inference 8000/tcp")
    assert ports.splitlines() == ["127.0.0.1:8000"]
