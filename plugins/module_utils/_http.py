# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the edgeai.fleet collection: not a public API, may change without notice.
"""The HTTP layer of the device-side clients: standard library + ansible.module_utils only."""

from __future__ import annotations

import time
from urllib.parse import urlparse


class Throttle:
    """Keeps a download at or under ``rate`` bytes per second (0: no limit), so a device
    leaves the rest of a thin site link to the others and to its live traffic."""

    def __init__(self, rate=0, clock=time.monotonic, sleep=time.sleep):
        self.rate = rate
        self._clock = clock
        self._sleep = sleep
        self._start = clock()
        self._taken = 0

    def take(self, nbytes):
        if self.rate <= 0:
            return
        self._taken += nbytes
        ahead = self._taken / self.rate - (self._clock() - self._start)
        if ahead > 0:
            self._sleep(ahead)


def redact_url(url):
    parsed = urlparse(url)
    if parsed.username or parsed.password or parsed.query:
        netloc = parsed.hostname + (f":{parsed.port}" if parsed.port else "")
        return f"{parsed.scheme}://{netloc}{parsed.path}"
    return url
