"""Event signatures: hex HMAC-SHA256 over ``<timestamp>.<body>`` (see docs/event-api.yaml)."""

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
    return hmac.compare_digest(sign(secret, timestamp, body), given)
