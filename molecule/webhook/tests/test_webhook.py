# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The relay on the device (non-root, secret in a 0600 file only) and events at the lab's receiver."""

from __future__ import annotations

import json
import os
import ssl
import time
import urllib.request
from pathlib import Path

REPO = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
LAB = REPO / ".lab"
CONTAINER = "edgeai-event-relay"


def receiver(path: str):
    context = ssl.create_default_context(cafile=str(LAB / "pki" / "ca.crt"))
    with urllib.request.urlopen(f"https://127.0.0.1:8766/_control{path}", timeout=10, context=context) as resp:
        return json.loads(resp.read())


def device_id(host) -> str:
    return "mol-webhook-" + host.backend.get_hostname()


def test_relay_runs_as_its_own_user_with_a_private_secret(host):
    state = json.loads(host.check_output(f"docker inspect {CONTAINER}"))[0]
    assert state["State"]["Running"]
    assert state["HostConfig"]["NetworkMode"] == "host"
    assert host.check_output(f"docker exec {CONTAINER} id -u").strip() == "10001"
    secret = host.file("/etc/edgeai/event-relay/hmac_secret")
    assert secret.mode == 0o600 and secret.uid == 10001
    value = secret.content_string.strip()
    assert value and value not in json.dumps(state["Config"])  # not in argv nor env


def test_relay_healthy_on_loopback(host):
    health = json.loads(host.check_output("python3 -c \"import urllib.request;print(urllib.request.urlopen("
                                          "'http://127.0.0.1:8780/healthz').read().decode())\""))
    assert health["status"] == "ok" and health["device_id"] == device_id(host)


def test_registered_and_events_arrived(host):
    registration = receiver("/registrations")[device_id(host)]
    assert registration["model_name"] == "resnet50"
    assert registration["webhook_url"] == "https://webhook.edgeai.lab:8766/v1/events"
    types = [r["event"]["type"] for r in receiver("/events")["events"]
             if r["event"].get("device_id") == device_id(host)]
    assert "relay.started" in types and "webhook.verify" in types and "webhook.test" in types


POST = ("python3 -c \"import sys,urllib.request,urllib.error;h={'Authorization':'Bearer '+sys.argv[2]} "
        "if sys.argv[2] else {};r=urllib.request.Request('http://127.0.0.1:8780/v1/events',"
        "data=sys.argv[1].encode(),method='POST',headers=h)\ntry: print(urllib.request.urlopen(r).status)\n"
        "except urllib.error.HTTPError as e: print(e.code)\" ")


def test_the_local_api_needs_the_private_token(host):
    token = host.file("/etc/edgeai/event-relay/local_token")
    assert token.mode == 0o600 and token.uid == 10001
    body = json.dumps({"type": "app.molecule", "source": "ansible"})
    post = host.run(POST + f"'{body}' ''")
    assert post.rc == 0 and post.stdout.strip() == "401", post.stderr


def test_an_application_event_reaches_the_receiver(host):
    marker = f"mol-{int(time.time() * 1000)}"
    body = json.dumps({"type": "app.molecule", "id": marker, "data": {"n": 1}})
    token = host.file("/etc/edgeai/event-relay/local_token").content_string.strip()
    post = host.run(POST + f"'{body}' '{token}'")
    assert post.rc == 0 and post.stdout.strip() == "202", post.stderr
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ids = [r["event"]["id"] for r in receiver("/events?type=app.molecule")["events"]]
        if marker in ids:
            return
        time.sleep(1)
    raise AssertionError(f"event {marker} did not reach the receiver in 30 s")
