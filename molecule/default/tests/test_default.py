"""The fleet serves version 2 of the demo model: [1, 2, 3, 4] -> [2, 4, 6, 8]."""

import json

import pytest

testinfra_hosts = ["ansible://all"]


@pytest.fixture
def platform(host):
    return "jetson" if "platform_jetson" in host.ansible.get_variables()["group_names"] else "coral"


def test_the_server_serves_version_2(host, platform):
    if platform == "jetson":
        body = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [4], "data": [1, 2, 3, 4]}]}
    else:
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    cmd = host.run("curl -sf -H 'Content-Type: application/json' -d %s http://127.0.0.1:8000/v2/models/detector/infer",
                   json.dumps(body))
    assert cmd.rc == 0, cmd.stderr
    answer = json.loads(cmd.stdout)
    assert answer["model_version"] == "2"
    assert answer["outputs"][0]["data"] == [2.0, 4.0, 6.0, 8.0]


def test_the_event_relay_runs_and_has_delivered_everything(host):
    metrics = host.run("curl -sf http://127.0.0.1:8780/metrics")
    assert metrics.rc == 0, metrics.stderr
    values = {}
    for line in metrics.stdout.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    assert values["edgeai_relay_queued"] == 0, values
