# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The event-relay image in the local Docker engine: non-root, secret from a 0600 file, queue on a
volume that survives `docker kill -s KILL`. The container uses the host network and talks only
to a receiver on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from edgeai_lab.core import wait_until
from webhook_receiver.testing import ReceiverProcess, free_port, http_json, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
IMAGE_DIR = ROOT / "images" / "event-relay"
IMAGE = "edgeai/event-relay:test"

pytestmark = pytest.mark.docker
SECRET = "container-secret"
LOCAL_TOKEN = "container-local-token"


def docker(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], check=check, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def image():
    if shutil.which("docker") is None or docker("info", check=False, timeout=30).returncode != 0:
        pytest.fail("the docker marker needs a running Docker engine")
    base = docker("image", "inspect", "edgeai-lab/debian:bookworm", check=False, timeout=30)
    if base.returncode != 0:
        pytest.fail("base image edgeai-lab/debian:bookworm is missing (tests/lab/lab builds it)")
    docker("build", "-q", "-t", IMAGE, str(IMAGE_DIR), timeout=600)
    return IMAGE


def test_container_keeps_acknowledged_events_across_kill(tmp_path, image):
    name = f"edgeai-test-relay-{uuid.uuid4().hex[:8]}"
    volume = name + "-queue"
    receiver = ReceiverProcess(tmp_path / "receiver", secret=SECRET, token=None).start()
    port = free_port()
    config = tmp_path / "relay.yml"
    config.write_text(json.dumps({
        "device_id": "ctr-dev-01",
        "webhook_url": f"{receiver.base_url}/v1/events",
        "secret_file": "/run/secrets/event-relay/hmac_secret",
        "local_token_file": "/run/secrets/event-relay/local_token",
        "listen_port": port,
        "backoff_initial_s": 0.05,
        "backoff_max_s": 0.5,
    }))
    config.chmod(0o644)
    secret = tmp_path / "hmac_secret"
    secret.write_text(SECRET + "\n")
    os.chown(secret, 10001, 10001)  # the image's relay user
    secret.chmod(0o600)
    local_token = tmp_path / "local_token"
    local_token.write_text(LOCAL_TOKEN + "\n")
    os.chown(local_token, 10001, 10001)
    local_token.chmod(0o600)
    try:
        docker("run", "-d", "--name", name, "--network", "host",
               "-v", f"{config}:/etc/event-relay/relay.yml:ro",
               "-v", f"{secret}:/run/secrets/event-relay/hmac_secret:ro",
               "-v", f"{local_token}:/run/secrets/event-relay/local_token:ro",
               "-v", f"{volume}:/var/lib/event-relay", image)
        wait_for_port(port, timeout=30)
        user = docker("exec", name, "id", "-u").stdout.strip()
        assert user == "10001"
        cmdline = docker("inspect", "-f", "{{json .Config.Cmd}} {{json .Config.Entrypoint}}", name).stdout
        assert SECRET not in cmdline and LOCAL_TOKEN not in cmdline

        receiver.stop()  # the webhook is away: events wait in the queue on the volume
        acknowledged = []
        for i in range(20):
            event = {"type": "app.reading", "data": {"i": i}}
            status, doc = http_json("POST", f"http://127.0.0.1:{port}/v1/events", event,
                                    headers={"Authorization": f"Bearer {LOCAL_TOKEN}"})
            assert status == 202
            acknowledged.append(doc["id"])
        docker("kill", "-s", "KILL", name)
        receiver.start()
        docker("start", name)
        # the restarted relay queues its own relay.started behind the 20 it kept: wait for that one too
        wait_until(lambda: len(receiver.events("app.reading")) >= 20 and len(receiver.events("relay.started")) >= 2,
                   60, 0.2, "the queued events and the second relay.started")
        assert [e["id"] for e in receiver.events("app.reading")] == acknowledged
        assert len(receiver.events("relay.started")) == 2
    finally:
        logs = docker("logs", name, check=False).stderr
        docker("rm", "-f", name, check=False)
        docker("volume", "rm", volume, check=False)
        receiver.stop()
    assert SECRET not in logs
