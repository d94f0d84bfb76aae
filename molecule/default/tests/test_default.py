"""The fleet serves version 2 of the demo model: [1, 2, 3, 4] -> [2, 4, 6, 8]."""

testinfra_hosts = ["ansible://all"]


def test_the_server_serves_version_2(demo_model_answer):
    assert demo_model_answer() == ("2", [2.0, 4.0, 6.0, 8.0])


def test_the_event_relay_runs_and_has_delivered_everything(host):
    metrics = host.run("curl -sf http://127.0.0.1:8780/metrics")
    assert metrics.rc == 0, metrics.stderr
    values = {}
    for line in metrics.stdout.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    assert values["edgeai_relay_queued"] == 0, values
