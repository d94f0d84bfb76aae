from __future__ import annotations

import hashlib
import hmac
import random

from event_relay.delivery import backoff_delay, classify
from event_relay.signing import sign, verify


def test_signature_is_hmac_sha256_over_timestamp_dot_body():
    body = b'{"type":"x"}'
    assert sign(b"k", "1700000000", body) == "4016157a9cc9ebb22128c7b82a497f8c73a1fea2dc2c4db27258a857d56bdded"
    assert sign(b"k", "1", body) == hmac.new(b"k", b"1." + body, hashlib.sha256).hexdigest()
    assert verify(b"k", "1", body, "sha256=" + sign(b"k", "1", body))
    assert not verify(b"k", "2", body, sign(b"k", "1", body))
    assert not verify(b"other", "1", body, sign(b"k", "1", body))


def test_classify():
    assert classify(200) == classify(202) == "delivered"
    assert classify(500) == classify(503) == classify(408) == classify(429) == "retry"
    assert classify(400) == classify(401) == classify(404) == classify(409) == classify(422) == "permanent"
    assert classify(301) == "permanent"


def test_backoff_grows_is_capped_and_jittered():
    rng = random.Random(1)
    delays = [backoff_delay(n, 0.5, 8.0, rng) for n in range(1, 10)]
    for n, delay in enumerate(delays, start=1):
        cap = min(8.0, 0.5 * 2 ** (n - 1))
        assert cap / 2 <= delay <= cap
    assert max(delays) <= 8.0
    assert len({round(d, 6) for d in delays}) == len(delays)
