# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""docs/event-api.yaml against what the code does: every status the receiver answers is documented
for its operation, and the events the relay and webhook_target send have the documented shape."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import yaml
from event_relay.store import EventStore
from webhook_receiver.server import REGISTRATION_FIELDS, sign
from webhook_receiver.testing import ReceiverProcess, http_json

ROOT = Path(__file__).resolve().parents[2]

SPEC = yaml.safe_load((ROOT / "docs" / "event-api.yaml").read_text())
SECRET, TOKEN = "contract-secret", "contract-token"


@pytest.fixture(scope="module")
def receiver(tmp_path_factory):
    with ReceiverProcess(tmp_path_factory.mktemp("contract") / "state", secret=SECRET, token=TOKEN) as proc:
        yield proc


def documented(path: str, method: str) -> set[int]:
    return {int(code) for code in SPEC["paths"][path][method]["responses"]}


def call(receiver, method, path, payload=None, token=TOKEN, headers=None, body=None):
    all_headers = {"Authorization": f"Bearer {token}"} if token else {}
    all_headers.update(headers or {})
    return http_json(method, receiver.base_url + path, payload, headers=all_headers, body=body)


def signed(body: bytes, key: str, secret: str = SECRET, skew: int = 0) -> dict[str, str]:
    timestamp = str(int(time.time()) + skew)
    return {"X-Edgeai-Timestamp": timestamp, "X-Edgeai-Signature": sign(secret.encode(), timestamp, body),
            "Idempotency-Key": key}


def test_spec_is_openapi_31_with_the_four_operations():
    assert SPEC["openapi"].startswith("3.1")
    assert set(SPEC["paths"]) == {"/v1/devices/{device_id}", "/v1/events"}
    assert set(SPEC["paths"]["/v1/devices/{device_id}"]) >= {"get", "put", "delete"}
    assert "post" in SPEC["paths"]["/v1/events"]
    assert SPEC["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_registration_fields_match_the_receiver_and_the_module():
    from ansible_collections.edgeai.fleet.plugins.module_utils._webhook_target import (
        REGISTRATION_FIELDS as MODULE_FIELDS,
    )

    schema = set(SPEC["components"]["schemas"]["Registration"]["properties"])
    assert schema == set(REGISTRATION_FIELDS) == set(MODULE_FIELDS)


def test_device_operations_answer_documented_statuses(receiver):
    device = "/v1/devices/contract-01"
    path = "/v1/devices/{device_id}"
    seen = {
        ("get", call(receiver, "GET", device)[0]),
        ("put", call(receiver, "PUT", device, {"site": "s1"})[0]),
        ("put", call(receiver, "PUT", device, {"site": "s2"})[0]),
        ("put", call(receiver, "PUT", device, {"bogus": 1})[0]),
        ("put", call(receiver, "PUT", device, body=b"{not json")[0]),
        ("get", call(receiver, "GET", device)[0]),
        ("get", call(receiver, "GET", device, token="wrong")[0]),
        ("delete", call(receiver, "DELETE", device)[0]),
        ("delete", call(receiver, "DELETE", device)[0]),
    }
    assert {pair[1] for pair in seen} >= {200, 201, 204, 400, 401, 404, 422}
    for method, status in seen:
        assert status in documented(path, method), f"{method.upper()} answered undocumented {status}"


def test_event_post_answers_documented_statuses(receiver):
    body = json.dumps({"id": "contract-ev-1", "seq": 1, "type": "app.x", "device_id": "contract-01",
                       "source": "app", "time": "2026-01-01T00:00:00Z", "data": {}}).encode()
    answers = [
        call(receiver, "POST", "/v1/events", body=body, headers=signed(body, "contract-ev-1")),
        call(receiver, "POST", "/v1/events", body=body, headers=signed(body, "contract-ev-1")),
        call(receiver, "POST", "/v1/events", body=body, headers=signed(body, "contract-ev-2", secret="other")),
        call(receiver, "POST", "/v1/events", body=body, headers=signed(body, "contract-ev-3", skew=-3600)),
        call(receiver, "POST", "/v1/events", body=body, headers={"Idempotency-Key": "contract-ev-4"}),
        call(receiver, "POST", "/v1/events", body=b"[]", headers=signed(b"[]", "contract-ev-5")),
    ]
    statuses = [answer[0] for answer in answers]
    assert statuses == [202, 200, 401, 401, 401, 422]
    errors = [answer[1].get("error") for answer in answers[2:5]]
    assert errors == ["invalid_signature", "stale_timestamp", "missing_signature"]
    assert set(statuses) <= documented("/v1/events", "post")
    ack_statuses = set(SPEC["components"]["schemas"]["EventAck"]["properties"]["status"]["enum"])
    assert {answers[0][1]["status"], answers[1][1]["status"]} == ack_statuses


def test_relay_envelope_has_the_documented_shape(tmp_path):
    schema = SPEC["components"]["schemas"]["Event"]
    store = EventStore(str(tmp_path / "q.db"), 10, 1 << 20, 3600)
    event = json.loads(store.append("deploy_finished", {"model": "m"}, device_id="d-1", source="playbook").body)
    assert set(event) == set(schema["required"]) == set(schema["properties"])
    assert re.match(schema["properties"]["type"]["pattern"], event["type"])
    assert re.match(SPEC["components"]["schemas"]["DeviceId"]["pattern"], event["device_id"])


def test_module_test_event_has_the_documented_shape():
    from ansible_collections.edgeai.fleet.plugins.module_utils._webhook import make_event

    schema = SPEC["components"]["schemas"]["Event"]
    event = make_event("webhook.test", "d-1", {"message": "x"})
    assert set(event) == set(schema["required"])
    assert re.match(schema["properties"]["type"]["pattern"], event["type"])
