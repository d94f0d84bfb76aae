# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Role edgeai.fleet.webhook on a simulated device of its own: the relay container runs in the
device's engine (image pulled over TLS with auth from the lab registry), the device is registered
with the lab's webhook receiver over https, a verification event goes through end to end, and a
second run changes nothing."""

from __future__ import annotations

import json
import re
import ssl
import subprocess
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from edgeai_lab.access import REPO as ROOT
from edgeai_lab.access import lab_cli

pytestmark = [pytest.mark.lab, pytest.mark.docker]

PLAYBOOK = """
- name: Event relay on one lab device
  hosts: "{{ target }}"
  gather_facts: false
  vars_files:
    - "{{ credentials_file }}"
  vars:
    container_engine_registries:
      - host: "{{ edge_lab_registry }}"
        ca: "{{ lookup('ansible.builtin.file', edge_lab_ca_cert) }}"
        username: "{{ edge_lab_registry_username }}"
        password: "{{ edge_lab_registry_password }}"
    webhook_api_url: "{{ edge_lab_webhook_url }}"
    webhook_api_token: "{{ lookup('ansible.builtin.file', token_file) }}"
    webhook_hmac_secret: "{{ lookup('ansible.builtin.file', secret_file) }}"
    webhook_ca_pem: "{{ lookup('ansible.builtin.file', edge_lab_ca_cert) }}"
    webhook_relay_image: "{{ relay_image }}"
    webhook_relay_settings: {health_interval_s: 5}
    webhook_registration: {model_name: resnet50, model_version: "1"}
  roles:
    - edgeai.fleet.container_engine
    - edgeai.fleet.webhook
"""


def control(lab: dict[str, Any], path: str) -> Any:
    context = ssl.create_default_context(cafile=lab["ca_cert"])
    with urllib.request.urlopen(lab["webhook"]["host_url"] + "/_control" + path, timeout=10,
                                context=context) as response:
        return json.loads(response.read())


@pytest.fixture
def device(lab):
    if not lab.get("webhook") or "event-relay" not in lab.get("images", {}):
        pytest.fail("the lab has no webhook receiver or no event-relay image: `tests/lab/lab up` should make both")
    name = f"evt-{uuid.uuid4().hex[:6]}"
    added = lab_cli("device", "add", name, "--profile", "agx-orin", "--site", "site-e", timeout=600)
    assert added.returncode == 0, added.stderr
    try:
        yield name
    finally:
        lab_cli("device", "rm", name, timeout=300)


def play(lab: dict[str, Any], playbook: Path, target: str, *extra: str) -> tuple[str, dict[str, int]]:
    webhook = lab["webhook"]
    proc = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "ansible-playbook"), "-i", lab["inventory"]["hosts"], str(playbook),
         "-e", f"target={target}", "-e", f"relay_image={lab['images']['event-relay']['ref']}",
         "-e", f"credentials_file={lab['registry']['credentials_vars_file']}",
         "-e", f"token_file={webhook['token_file']}", "-e", f"secret_file={webhook['hmac_secret_file']}", *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    recap = re.search(rf"^{re.escape(target)}\s*:\s*(.*)$", proc.stdout, re.MULTILINE)
    assert proc.returncode == 0 and recap, proc.stdout[-6000:] + proc.stderr[-2000:]
    counts = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", recap.group(1))}
    return proc.stdout, counts


def test_role_converges_idempotent_and_delivers(lab, device, tmp_path):
    playbook = tmp_path / "webhook.yml"
    playbook.write_text(PLAYBOOK)
    lab = json.loads(lab_cli("status", "--json", timeout=60).stdout)  # now with the new device

    out, first = play(lab, playbook, device)
    assert first["failed"] == 0 and first["changed"] > 0
    secret = Path(lab["webhook"]["hmac_secret_file"]).read_text().strip()
    assert secret not in out

    second = play(lab, playbook, device)[1]
    assert second["changed"] == 0, "second run must change nothing"
    checked = play(lab, playbook, device, "--check")[1]
    assert checked["changed"] == 0

    registration = control(lab, "/registrations")[device]
    assert registration["site"] == "site-e" and registration["model_name"] == "resnet50"
    events = [r["event"] for r in control(lab, "/events")["events"] if r["event"].get("device_id") == device]
    types = [e["type"] for e in events]
    assert types.count("webhook.verify") == 2  # one per real run, delivered through the relay
    assert types.count("webhook.test") == 2  # sent by webhook_target directly
    assert "relay.started" in types
    relayed = [e for e in events if e["seq"] > 0]
    assert [e["seq"] for e in relayed] == sorted(e["seq"] for e in relayed)
