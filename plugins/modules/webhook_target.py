#!/usr/bin/python
# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: webhook_target
short_description: Register a device with the external event API and say where its events go
version_added: 0.1.0
description:
  - Upserts the registration of one device (site, platform, model, server endpoint, webhook
    URL, event types) in an event API that follows the edgeai.fleet contract
    (C(docs/event-api.yaml)) with read-compare-write; a run with nothing new reports
    C(changed=false).
  - With O(state=absent) the registration is deleted.
  - Optionally sends a signed test event (HMAC-SHA256 over C(<timestamp>.<body>)) and
    requires a 2xx answer.
  - Retries with exponential backoff and jitter on HTTP 5xx, 408, 429 and connection errors;
    fails at once, with the API's answer, on other 4xx.
  - Runs on the device (or wherever it is delegated) with the Python standard library only.
author:
  - edgeai.fleet contributors (@edgeai)
extends_documentation_fragment:
  - edgeai.fleet._attributes
options:
  api_url:
    description:
      - Base URL of the event API, for example V(https://events.example.com). The module
        appends C(/v1/devices/<device_id>) and C(/v1/events).
      - Must be https unless O(allow_insecure_http=true).
    type: str
    required: true
  device_id:
    description: The device's unique id (the inventory hostname in edgeai.fleet).
    type: str
    required: true
  state:
    description: V(present) upserts the registration, V(absent) deletes it.
    type: str
    choices: [present, absent]
    default: present
  site:
    description: Site the device belongs to.
    type: str
  platform:
    description: Device platform, for example V(jetson), V(coral), V(generic).
    type: str
  hardware:
    description: Hardware model, for example V(agx-orin).
    type: str
  model_name:
    description: Name of the model the device serves.
    type: str
  model_version:
    description: Version of the model the device serves.
    type: str
  server_endpoint:
    description: URL of the device's inference server, as the API should record it.
    type: str
  webhook_url:
    description:
      - Where the device's events go. Omit to use C(<api_url>/v1/events).
      - Also where the test event is sent. Must be https unless O(allow_insecure_http=true).
    type: str
  event_types:
    description:
      - Event types the device sends (for example V(deploy_started), V(server.health_changed),
        V(status)). Stored sorted and without duplicates. Omit for no restriction.
    type: list
    elements: str
  labels:
    description: Free-form labels stored with the registration.
    type: dict
  api_token:
    description: Bearer token for the event API. Never logged.
    type: str
  hmac_secret:
    description:
      - Shared secret for event signatures. Needed with O(test_event=true). Never logged.
    type: str
  test_event:
    description:
      - Send a signed C(webhook.test) event after the registration and fail unless the API
        answers 2xx. Skipped in check mode. Does not count as a change.
    type: bool
    default: false
  allow_insecure_http:
    description: Allow plain http URLs (labs only).
    type: bool
    default: false
  validate_certs:
    description: Verify the API's TLS certificate.
    type: bool
    default: true
  ca_path:
    description: PEM file of the CA that signed the API's certificate.
    type: path
  timeout:
    description: Seconds to wait for each HTTP request.
    type: float
    default: 10
  retries:
    description: Retries after a 5xx, 408, 429 or connection error (0 for none).
    type: int
    default: 3
  retry_delay:
    description: First backoff delay in seconds; it doubles per retry (with jitter), up to 30.
    type: float
    default: 1
attributes:
  check_mode:
    support: full
    details: Reads the registration and reports what would change; writes nothing and sends no test event.
  diff_mode:
    support: full
    details: Shows the managed registration fields before and after.
  idempotent:
    support: full
    details:
      - The registration is compared field by field and written only when different.
      - With O(test_event=true) a test event is sent on every run; it does not count as a change.
notes:
  - The API contract (device registration upsert, signed events, idempotency keys) is
    documented in the collection's C(docs/event-api.yaml) and C(docs/events.md).
seealso:
  - name: edgeai.fleet event API
    description: The OpenAPI document of the contract this module speaks.
    link: https://example.invalid/edgeai/fleet/docs/event-api.yaml
"""

EXAMPLES = r"""
- name: Register the device and check that a signed event gets through
  edgeai.fleet.webhook_target:
    api_url: https://events.example.com
    device_id: "{{ inventory_hostname }}"
    site: "{{ edge_site }}"
    platform: "{{ edge_platform }}"
    hardware: "{{ edge_hardware }}"
    model_name: resnet50
    model_version: "3"
    server_endpoint: "http://{{ ansible_host }}:8000"
    event_types: [deploy_started, deploy_finished, server.health_changed, status]
    api_token: "{{ vault_event_api_token }}"
    hmac_secret: "{{ vault_event_hmac_secret }}"
    test_event: true

- name: Remove the device's registration
  edgeai.fleet.webhook_target:
    api_url: https://events.example.com
    device_id: "{{ inventory_hostname }}"
    api_token: "{{ vault_event_api_token }}"
    state: absent
"""

RETURN = r"""
device_id:
  description: The device id the task managed.
  returned: always
  type: str
  sample: site-a-orin-01
state:
  description: The requested state.
  returned: always
  type: str
  sample: present
registration:
  description:
    - The registration as the API stored it (with its C(device_id) and C(updated_at)); in
      check mode, what would be stored. Empty with O(state=absent).
  returned: always
  type: dict
  sample: {"device_id": "site-a-orin-01", "site": "site-a", "platform": "jetson", "model_name": "resnet50",
           "model_version": "3", "updated_at": "2026-11-27T10:00:00Z"}
diff:
  description: Managed registration fields before and after.
  returned: always
  type: dict
  contains:
    before:
      description: Fields stored before the task ran (empty when not registered).
      type: dict
      returned: always
    after:
      description: Fields the task asks for (empty with O(state=absent)).
      type: dict
      returned: always
test_event:
  description: What happened to the test event.
  returned: when O(test_event=true)
  type: dict
  contains:
    sent:
      description: Whether the event was sent (false in check mode).
      type: bool
      returned: always
    id:
      description: The event's id, also its Idempotency-Key.
      type: str
      returned: when sent
    status:
      description: HTTP status of the API's answer (2xx).
      type: int
      returned: when sent
    response:
      description: The API's answer body, decoded from JSON when it is JSON.
      type: raw
      returned: when sent
    skipped_reason:
      description: Why the event was not sent.
      type: str
      returned: when not sent
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.edgeai.fleet.plugins.module_utils._webhook_target import run_module


def main():
    run_module(AnsibleModule)


if __name__ == "__main__":
    main()
