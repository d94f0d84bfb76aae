# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""edgeai.fleet.webhook_target against the lab's webhook receiver, a real process on loopback."""

from __future__ import annotations

import json
import socket
import time

import pytest
from ansible.module_utils.testing import patch_module_args
from ansible_collections.edgeai.fleet.plugins.module_utils import _webhook
from ansible_collections.edgeai.fleet.plugins.module_utils._webhook import sign
from ansible_collections.edgeai.fleet.plugins.modules import webhook_target
from webhook_receiver.server import sign as receiver_sign
from webhook_receiver.testing import ReceiverProcess, free_port, http_json

SECRET = "unit-secret"
TOKEN = "unit-token"


@pytest.fixture(scope="module")
def receiver(tmp_path_factory):
    with ReceiverProcess(tmp_path_factory.mktemp("recv") / "state", secret=SECRET, token=TOKEN) as proc:
        yield proc


@pytest.fixture(autouse=True)
def _reset(request, monkeypatch):
    # Backoff sleeps are real but short in these tests.
    monkeypatch.setattr(_webhook, "backoff_delay", lambda attempt, initial, maximum=30.0: 0.01)
    if "receiver" in request.fixturenames:
        request.getfixturevalue("receiver").control("/reset", {})


def run_module(args, capsys, check_mode=False, diff=False):
    args = dict(args, _ansible_check_mode=check_mode, _ansible_diff=diff)
    with patch_module_args(args), pytest.raises(SystemExit) as exc:
        webhook_target.main()
    result = json.loads(capsys.readouterr().out)
    result["rc"] = exc.value.code
    return result


def base_args(receiver, **extra):
    args = {
        "api_url": receiver.base_url,
        "allow_insecure_http": True,
        "api_token": TOKEN,
        "device_id": "site-a-orin-01",
        "site": "site-a",
        "platform": "jetson",
        "hardware": "agx-orin",
        "model_name": "resnet50",
        "model_version": "3",
        "server_endpoint": "http://10.20.0.10:8000",
        "event_types": ["status", "deploy_finished", "status"],
        "labels": {"line": "a"},
        "retry_delay": 0.01,
    }
    args.update(extra)
    return args


def test_signature_matches_receiver_and_known_vector():
    # Same algorithm on both sides, and a fixed vector so a change to either is caught.
    body = b'{"type":"x"}'
    assert sign(b"k", "1700000000", body) == receiver_sign(b"k", "1700000000", body)
    assert sign(b"k", "1700000000", body) == "4016157a9cc9ebb22128c7b82a497f8c73a1fea2dc2c4db27258a857d56bdded"
    assert sign(b"k", "1700000001", body) != sign(b"k", "1700000000", body)


def test_upsert_then_rerun_is_unchanged(receiver, capsys):
    first = run_module(base_args(receiver), capsys, diff=True)
    assert first["rc"] == 0, first
    assert first["changed"] is True
    assert first["diff"]["before"] == {}
    assert first["registration"]["model_version"] == "3"
    assert first["registration"]["event_types"] == ["deploy_finished", "status"]
    stored = receiver.control("/registrations")["site-a-orin-01"]
    assert stored["site"] == "site-a" and stored["labels"] == {"line": "a"}

    second = run_module(base_args(receiver), capsys)
    assert second["rc"] == 0 and second["changed"] is False
    assert receiver.stats()["registrations_put"] == 1


def test_change_is_written_and_check_mode_writes_nothing(receiver, capsys):
    run_module(base_args(receiver), capsys)
    checked = run_module(base_args(receiver, model_version="4"), capsys, check_mode=True, diff=True)
    assert checked["changed"] is True
    assert checked["diff"]["before"]["model_version"] == "3"
    assert checked["diff"]["after"]["model_version"] == "4"
    assert receiver.control("/registrations")["site-a-orin-01"]["model_version"] == "3"

    real = run_module(base_args(receiver, model_version="4"), capsys)
    assert real["changed"] is True
    assert receiver.control("/registrations")["site-a-orin-01"]["model_version"] == "4"

    # A field the task no longer sets is removed from the registration.
    args = base_args(receiver, model_version="4")
    del args["labels"]
    dropped = run_module(args, capsys)
    assert dropped["changed"] is True
    assert "labels" not in receiver.control("/registrations")["site-a-orin-01"]


def test_absent_deletes_and_is_idempotent(receiver, capsys):
    run_module(base_args(receiver), capsys)
    checked = run_module(base_args(receiver, state="absent"), capsys, check_mode=True)
    assert checked["changed"] is True
    assert "site-a-orin-01" in receiver.control("/registrations")
    gone = run_module(base_args(receiver, state="absent"), capsys)
    assert gone["changed"] is True
    assert receiver.control("/registrations") == {}
    again = run_module(base_args(receiver, state="absent"), capsys)
    assert again["changed"] is False


def test_test_event_is_signed_and_recorded(receiver, capsys):
    result = run_module(base_args(receiver, hmac_secret=SECRET, test_event=True), capsys)
    assert result["rc"] == 0, result
    assert result["test_event"]["sent"] is True and result["test_event"]["status"] == 202
    events = receiver.events("webhook.test")
    assert [e["id"] for e in events] == [result["test_event"]["id"]]
    assert events[0]["device_id"] == "site-a-orin-01"
    # Secrets never appear in the module's result.
    assert SECRET not in json.dumps(result) and TOKEN not in json.dumps(result)


def test_test_event_with_wrong_secret_fails_clearly(receiver, capsys):
    result = run_module(base_args(receiver, hmac_secret="wrong", test_event=True), capsys)
    assert result["rc"] == 1 and result["failed"] is True
    assert "refused" in result["msg"] and result["status"] == 401
    assert result["response"]["error"] == "invalid_signature"
    assert receiver.stats().get("rejected_invalid_signature") == 1


def test_wrong_token_fails_without_retry(receiver, capsys):
    result = run_module(base_args(receiver, api_token="nope"), capsys)
    assert result["rc"] == 1 and result["status"] == 401
    assert result["attempts"] == 1


def test_retries_5xx_then_succeeds(receiver, capsys):
    receiver.control("", {"mode": "fail", "status": 503, "count": 2})
    result = run_module(base_args(receiver), capsys)
    assert result["rc"] == 0 and result["changed"] is True, result
    assert receiver.stats()["failed_injected"] == 2


def test_gives_up_after_retries_on_5xx(receiver, capsys):
    receiver.control("", {"mode": "fail", "status": 500})
    result = run_module(base_args(receiver, retries=2), capsys)
    assert result["rc"] == 1 and result["status"] == 500
    assert result["attempts"] == 3
    assert receiver.stats()["failed_injected"] == 3


def test_connection_refused_is_retried_then_reported(capsys):
    port = free_port()  # nothing listens there
    args = {"api_url": f"http://127.0.0.1:{port}", "allow_insecure_http": True, "device_id": "d1",
            "retries": 2, "retry_delay": 0.01, "timeout": 2}
    started = time.monotonic()
    result = run_module(args, capsys)
    assert result["rc"] == 1 and "cannot reach the event API" in result["msg"]
    assert result["attempts"] == 3
    assert time.monotonic() - started < 30


def test_plain_http_needs_explicit_permission(receiver, capsys):
    result = run_module(base_args(receiver, allow_insecure_http=False), capsys)
    assert result["rc"] == 1 and "allow_insecure_http" in result["msg"]
    assert receiver.stats().get("registrations_put", 0) == 0


def test_test_event_needs_secret(receiver, capsys):
    result = run_module(base_args(receiver, test_event=True), capsys)
    assert result["rc"] == 1 and "hmac_secret" in result["msg"]


def test_https_with_ca(tmp_path, capsys):
    import trustme  # pinned in requirements/dev.txt

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file, ca_file = tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    with ReceiverProcess(tmp_path / "tls", secret=SECRET, token=TOKEN,
                         tls_cert=str(cert_file), tls_key=str(key_file)) as tls_receiver:
        args = base_args(tls_receiver, allow_insecure_http=False, ca_path=str(ca_file),
                         hmac_secret=SECRET, test_event=True, timeout=5)
        # A client that connects and says nothing must not hold up the others.
        with socket.create_connection(("127.0.0.1", tls_receiver.port)):
            result = run_module(args, capsys)
        assert result["rc"] == 0, result
        assert result["changed"] is True and result["test_event"]["status"] == 202
        untrusted = run_module(dict(args, ca_path=None, retries=0), capsys)
        assert untrusted["rc"] == 1


def test_receiver_rejects_unsigned_and_stale_events(receiver):
    body = json.dumps({"type": "x", "id": "k1"}).encode()
    auth = {"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": "k1"}
    status, doc = http_json("POST", receiver.base_url + "/v1/events", body=body, headers=auth)
    assert status == 401 and doc["error"] == "missing_signature"
    old = str(int(time.time()) - 3600)
    stale = dict(auth, **{"X-Edgeai-Timestamp": old,
                          "X-Edgeai-Signature": sign(SECRET.encode(), old, body)})
    status, doc = http_json("POST", receiver.base_url + "/v1/events", body=body, headers=stale)
    assert status == 401 and doc["error"] == "stale_timestamp"
    now = str(int(time.time()))
    good = dict(auth, **{"X-Edgeai-Timestamp": now, "X-Edgeai-Signature": sign(SECRET.encode(), now, body)})
    assert http_json("POST", receiver.base_url + "/v1/events", body=body, headers=good)[0] == 202
    assert http_json("POST", receiver.base_url + "/v1/events", body=body, headers=good)[0] == 200
    stats = receiver.stats()
    assert stats["accepted"] == 1 and stats["duplicates"] == 1
