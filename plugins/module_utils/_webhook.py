# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# This file is PRIVATE to the edgeai.fleet collection. It is not a public API: it may
# change or go away in any release without notice.

"""A small client of the event API (docs/event-api.yaml) on the one HTTP layer
(plugins/module_utils/_http.py): standard library + ansible.module_utils."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from datetime import datetime, timezone

from ansible.module_utils.urls import open_url
from ansible_collections.edgeai.fleet.plugins.module_utils._errors import WebhookError
from ansible_collections.edgeai.fleet.plugins.module_utils._http import (  # noqa: F401 - backoff_delay re-exported  # pylint: disable=unused-import
    Client,
    RetryPolicy,
    backoff_delay,
    origin,
)

SIGNATURE_HEADER = "X-Edgeai-Signature"
TIMESTAMP_HEADER = "X-Edgeai-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"


# COPIED ON PURPOSE: the signing contract (docs/event-api.yaml) has a copy in each separately
# shipped part: here (the collection's test event), images/event-relay/src/event_relay/signing.py
# (the relay, which signs) and tests/lab/webhook_receiver/webhook_receiver/server.py (the lab's
# receiver, which verifies). Change all three together. The Idempotency-Key is not signed: it
# must be the ``id`` inside the signed body (ping() sends event["id"]), which receivers
# de-duplicate on and which they refuse a different key for.
def sign(secret, timestamp, body):
    """Hex HMAC-SHA256 over ``<timestamp>.<body>``; secret and body are bytes, timestamp a str."""
    return hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()


def utc_now_iso():
    # timezone.utc, not datetime.UTC: device-side code also runs on Python 3.8.
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def make_event(event_type, device_id, data, source="ansible"):
    """An event envelope in the same shape the event relay sends."""
    return {
        "id": str(uuid.uuid4()),
        "seq": 0,
        "type": event_type,
        "device_id": device_id,
        "source": source,
        "time": utc_now_iso(),
        "data": data,
    }


def _open_url(*args, **kwargs):
    # looked up at call time, so that a test can stand in for the network here
    return open_url(*args, **kwargs)


class WebhookClient:
    """Requests with a bearer token; retries with backoff and jitter on 408/429/5xx and
    connection errors (the policy of plugins/module_utils/_http.py). The token goes only to
    the API's own scheme, host and port (a test event posted to another webhook URL carries
    its signature, not the token), and over plain http only to loopback or with
    ``allow_insecure_credentials`` (the module's allow_insecure_http)."""

    def __init__(self, base_url, token=None, validate_certs=True, ca_path=None, timeout=10.0,
                 retries=3, retry_delay=1.0, sleep=time.sleep, allow_insecure_credentials=False, opener=None):
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.http = Client(timeout=timeout, validate_certs=validate_certs, ca_path=ca_path,
                           retry=RetryPolicy(retries, retry_delay, sleep=sleep),
                           allow_insecure_credentials=allow_insecure_credentials, option="allow_insecure_http",
                           opener=opener or _open_url, error=WebhookError, what="the event API", secrets=[token])

    @property
    def attempts(self):
        """Requests sent so far, retries included."""
        return self.http.attempts

    def url(self, path):
        if path.startswith(("http://", "https://")):
            return path
        return self.base_url + path

    def request(self, method, path, payload=None, sign_secret=None, idempotency_key=None):
        """Send one request (with retries). Returns (status, decoded JSON or text or None).

        With ``sign_secret`` the body is signed again at every attempt (fresh timestamp);
        ``idempotency_key`` stays the same across attempts.
        """
        body = None if payload is None else json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        url = self.url(path)
        headers = {"Accept": "application/json", "User-Agent": "edgeai.fleet-webhook_target"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if idempotency_key:
            headers[IDEMPOTENCY_HEADER] = idempotency_key
        credentials = None
        if self.token and origin(url) == origin(self.base_url):
            credentials = {"Authorization": "Bearer " + self.token}

        def signed(attempt):
            if sign_secret is None:
                return {}
            timestamp = str(int(time.time()))
            return {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: sign(sign_secret, timestamp, body or b"")}

        resp = self.http.request(method, url, data=body, headers=headers, credentials=credentials, prepare=signed,
                                 what_credentials="the event API token (api_token)")
        return resp.status, resp.json()
