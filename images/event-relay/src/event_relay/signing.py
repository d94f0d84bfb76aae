"""Event signatures: hex HMAC-SHA256 over ``<timestamp>.<body>`` (see docs/event-api.yaml).

COPIED ON PURPOSE: the signing contract lives in three separately shipped parts, each with its
own copy: here (the event-relay image), tests/lab/webhook_receiver/webhook_receiver/server.py
(the lab's receiver, which verifies) and plugins/module_utils/_webhook.py (the collection's
edgeai.fleet.webhook_target test event). Change all three together, and docs/event-api.yaml.
The ``Idempotency-Key`` is not signed: it must equal the ``id`` inside the signed body, which is
what a receiver de-duplicates on.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Edgeai-Signature"
TIMESTAMP_HEADER = "X-Edgeai-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    return hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()


def verify(secret: bytes, timestamp: str, body: bytes, signature: str) -> bool:
    given = signature.strip().lower().removeprefix("sha256=")
    return hmac.compare_digest(sign(secret, timestamp, body).encode(), given.encode("utf-8", "replace"))
