"""Each device runs the right server for its platform, and it serves version 1 of the demo model."""

import json

testinfra_hosts = ["ansible://all"]


def test_the_server_kind_matches_the_platform(host, platform):
    labels = json.loads(host.check_output("docker inspect -f '{{json .Config.Labels}}' edgeai-inference"))
    assert labels["io.edgeai.server-kind"] == ("triton" if platform == "jetson" else "litert")
    restart = host.check_output("docker inspect -f '{{.HostConfig.RestartPolicy.Name}}' edgeai-inference")
    assert restart == "unless-stopped"


def test_version_1_answers(demo_model_answer):
    assert demo_model_answer() == ("1", [1.0, 2.0, 3.0, 4.0])


def test_the_server_listens_on_loopback_only(host):
    ports = host.check_output("docker port edgeai-inference 8000/tcp")
    assert ports.splitlines() == ["127.0.0.1:8000"]
