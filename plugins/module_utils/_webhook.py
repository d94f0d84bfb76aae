# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# This file is PRIVATE to the edgeai.fleet collection. It is not a public API: it may
# change or go away in any release without notice.

"""A small client of the event API (docs/event-api.yaml): standard library + ansible.module_utils."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import socket
import time
import uuid
from datetime import datetime, timezone
from urllib.error import HTTPError, URLError

from ansible.module_utils.urls import open_url

SIGNATURE_HEADER = "X-Edgeai-Signature"
TIMESTAMP_HEADER = "X-Edgeai-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class WebhookError(Exception):
    """The event API could not be reached, or answered in a way the caller cannot use."""

    def __init__(self, message, status=None, body=None):
        super().__init__(message)
        self.status = status
        self.body = body


def sign(secret, timestamp, body):
    """Hex HMAC-SHA256 over ``<timestamp>.<body>``; secret and body are bytes, timestamp a str."""
    return hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()


def utc_now_iso():
    # timezone.utc, not datetime.UTC: device-side code also runs on Python 3.8.
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")  # noqa: UP017


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


def backoff_delay(attempt, initial, maximum=30.0):
    """Exponential backoff with jitter (a random point in the upper half of the window)."""
    cap = min(maximum, initial * (2 ** max(0, attempt - 1)))
    return random.uniform(cap / 2, cap)


class WebhookClient:
    """Requests with a bearer token; retries with backoff on 5xx/408/429 and connection errors."""

    def __init__(self, base_url, token=None, validate_certs=True, ca_path=None, timeout=10.0,
                 retries=3, retry_delay=1.0, sleep=time.sleep):
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.validate_certs = validate_certs
        self.ca_path = ca_path
        self.timeout = timeout
        self.retries = retries
        self.retry_delay = retry_delay
        self.sleep = sleep
        self.attempts = 0

    def url(self, path):
        if path.startswith(("http://", "https://")):
            return path
        return self.base_url + path

    def _headers(self, extra=None):
        headers = {"Accept": "application/json", "User-Agent": "edgeai.fleet-webhook_target"}
        if self.token:
            headers["Authorization"] = "Bearer " + self.token
        headers.update(extra or {})
        return headers

    def request(self, method, path, payload=None, sign_secret=None, idempotency_key=None):
        """Send one request (with retries). Returns (status, decoded JSON or text or None).

        With ``sign_secret`` the body is signed again at every attempt (fresh timestamp);
        ``idempotency_key`` stays the same across attempts.
        """
        body = None if payload is None else json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        last_error = None
        for attempt in range(1, self.retries + 2):
            self.attempts += 1
            extra = {}
            if body is not None:
                extra["Content-Type"] = "application/json"
            if sign_secret is not None:
                timestamp = str(int(time.time()))
                extra[TIMESTAMP_HEADER] = timestamp
                extra[SIGNATURE_HEADER] = sign(sign_secret, timestamp, body or b"")
            if idempotency_key:
                extra[IDEMPOTENCY_HEADER] = idempotency_key
            try:
                response = open_url(self.url(path), data=body, headers=self._headers(extra), method=method,
                                    validate_certs=self.validate_certs, ca_path=self.ca_path,
                                    timeout=self.timeout, follow_redirects="none")
                status, raw = response.getcode(), response.read()
            except HTTPError as exc:
                status, raw = exc.code, exc.read() if exc.fp is not None else b""
            except (URLError, socket.timeout, OSError) as exc:  # noqa: UP041 - same on Python 3.8
                last_error = WebhookError(f"{method} {self.url(path)}: cannot reach the event API: {exc}")
                if attempt <= self.retries:
                    self.sleep(backoff_delay(attempt, self.retry_delay))
                    continue
                raise last_error from exc
            if status in RETRYABLE_STATUS and attempt <= self.retries:
                self.sleep(backoff_delay(attempt, self.retry_delay))
                continue
            return status, self._decode(raw)
        raise last_error or WebhookError(f"{method} {self.url(path)}: no answer")

    @staticmethod
    def _decode(raw):
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode("utf-8", "replace")
