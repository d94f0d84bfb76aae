# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the edgeai.fleet collection: not a public API, may change without notice.
"""Wait for a condition with a total time limit and a polling interval."""

from __future__ import annotations

import time

from ansible_collections.edgeai.fleet.plugins.module_utils._errors import WaitTimeout


class Waiter:
    """Polls ``predicate`` until it returns ``(True, info)`` or ``timeout`` seconds pass.

    ``predicate`` returns ``(done, info)``; ``info`` of the last poll is given back on
    success and put in the error on timeout. Exceptions of the types in ``retry_on`` count
    as "not yet"; others go through. The last poll happens no later than the deadline,
    so a condition that becomes true just before it is still seen.
    """

    def __init__(self, timeout, interval=1.0, clock=time.monotonic, sleep=time.sleep):
        if timeout < 0:
            raise ValueError("timeout must be >= 0")
        if interval <= 0:
            raise ValueError("interval must be > 0")
        self.timeout = float(timeout)
        self.interval = float(interval)
        self._clock = clock
        self._sleep = sleep

    def wait(self, predicate, what="condition", retry_on=()):
        start = self._clock()
        deadline = start + self.timeout
        attempts = 0
        info = None
        while True:
            attempts += 1
            try:
                done, info = predicate()
            except retry_on as exc:  # pylint: disable=catching-non-exception
                done, info = False, str(exc)
            now = self._clock()
            if done:
                return {"elapsed": now - start, "attempts": attempts, "info": info}
            if now >= deadline:
                raise WaitTimeout(
                    f"timed out after {now - start:.1f}s waiting for {what} (last: {info})",
                    attempts=attempts,
                    last=info,
                )
            self._sleep(min(self.interval, max(0.0, deadline - now)))
