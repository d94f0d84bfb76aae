# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the edgeai.fleet collection: not a public API, may change without notice.
"""Resumable downloads (HTTP Range) for edgeai.fleet.model_artifact."""

from __future__ import annotations

import http.client
import os
import re
import time
from urllib.error import HTTPError, URLError

from ansible.module_utils.urls import open_url
from ansible_collections.edgeai.fleet.plugins.module_utils._archive import CHUNK, sha256_file
from ansible_collections.edgeai.fleet.plugins.module_utils._errors import ArtifactError
from ansible_collections.edgeai.fleet.plugins.module_utils._http import Throttle
from ansible_collections.edgeai.fleet.plugins.module_utils._http import redact_url as _redact


class Downloader:
    """Downloads into ``<part>`` and resumes with an HTTP Range request when the part
    file already holds bytes (from an earlier attempt or an earlier run)."""

    def __init__(self, headers=None, validate_certs=True, ca_path=None, timeout=60.0,
                 retries=3, backoff=1.0, opener=open_url, sleep=time.sleep, rate_limit=0):
        self.headers = dict(headers or {})
        self.rate_limit = rate_limit
        self.validate_certs = validate_certs
        self.ca_path = ca_path
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._open = opener
        self._sleep = sleep

    def _get(self, url, offset):
        headers = dict(self.headers)
        if offset:
            headers["Range"] = f"bytes={offset}-"
        return self._open(url, headers=headers, method="GET", timeout=self.timeout,
                          validate_certs=self.validate_certs, ca_path=self.ca_path,
                          follow_redirects="safe", unredirected_headers=["Authorization"])

    def fetch(self, url, part, sha256, space_check=None):
        """Download ``url`` into ``part`` and verify its sha256. Returns a dict with
        ``bytes`` (transferred now), ``resumed`` and ``attempts``."""
        attempts = 0
        transferred = 0
        resumed = False
        restarted = False
        while True:
            offset = os.path.getsize(part) if os.path.exists(part) else 0
            attempts += 1
            try:
                resp = self._get(url, offset)
            except HTTPError as exc:
                if exc.code == 416 and offset:
                    # the server has nothing past our offset: the part may already be whole
                    if sha256_file(part) == sha256:
                        return {"bytes": transferred, "resumed": True, "attempts": attempts}
                    os.unlink(part)
                    continue
                if exc.code >= 500 and attempts <= self.retries:
                    self._sleep(self.backoff * attempts)
                    continue
                raise ArtifactError(f"download of {_redact(url)} failed: HTTP {exc.code} {exc.reason}",
                                    status=exc.code) from exc
            except (TimeoutError, URLError, ConnectionError, http.client.HTTPException) as exc:
                if attempts <= self.retries:
                    self._sleep(self.backoff * attempts)
                    continue
                reason = getattr(exc, "reason", exc)
                raise ArtifactError(f"download of {_redact(url)} failed after {attempts} attempts: {reason}") from exc
            status = resp.getcode()
            mode = "wb"
            if status == 206 and offset:
                start = _content_range_start(resp.headers.get("Content-Range"))
                if start != offset:
                    resp.close()
                    os.unlink(part)
                    continue
                mode = "ab"
                resumed = True
            elif status != 200:
                raise ArtifactError(f"download of {_redact(url)} failed: unexpected HTTP {status}")
            length = resp.headers.get("Content-Length")
            length = int(length) if length and length.isdigit() else None
            if space_check is not None and length is not None:
                space_check(length)
            written = 0
            complete = False
            throttle = Throttle(self.rate_limit, sleep=self._sleep)
            with open(part, mode) as out:
                while True:
                    try:
                        block = resp.read(CHUNK)
                    except (TimeoutError, ConnectionError, http.client.HTTPException, OSError) as exc:
                        error = exc
                        break
                    if not block:
                        complete = length is None or written == length
                        error = f"connection closed after {written} of {length} bytes"
                        break
                    out.write(block)
                    written += len(block)
                    throttle.take(len(block))
            transferred += written
            resp.close()
            if not complete:
                if attempts <= self.retries:
                    self._sleep(self.backoff * attempts)
                    continue
                raise ArtifactError(f"download of {_redact(url)} interrupted after {attempts} attempts: {error}",
                                    partial_bytes=os.path.getsize(part))
            actual = sha256_file(part)
            if actual == sha256:
                return {"bytes": transferred, "resumed": resumed, "attempts": attempts}
            os.unlink(part)
            if resumed and not restarted:
                # a stale or corrupt part: start once more from zero
                restarted = True
                resumed = False
                continue
            raise ArtifactError(f"sha256 mismatch for {_redact(url)}: expected {sha256}, got {actual}",
                                expected_sha256=sha256, actual_sha256=actual)


def _content_range_start(value):
    match = re.match(r"^\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*$", value or "")
    return int(match.group(1)) if match else None
