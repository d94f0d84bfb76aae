"""Lab stand-in for the external event API (see docs/event-api.yaml).

Records device registrations and events, verifies HMAC signatures, de-duplicates by
Idempotency-Key, and can be told to fail, to be slow or to drop connections through a
small control API. Standard library only.
"""

__version__ = "0.1.0"
