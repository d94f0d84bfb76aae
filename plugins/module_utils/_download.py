# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the edgeai.fleet collection: not a public API, may change without notice.
"""Resumable downloads (HTTP Range) for edgeai.fleet.model_artifact, on the one HTTP layer
(plugins/module_utils/_http.py): its retry policy, redirects without credentials to other
hosts, no credentials over plain http, redacted messages, the throttled chunk reader."""

from __future__ import annotations

import os
import re
import time

from ansible.module_utils.urls import open_url
from ansible_collections.edgeai.fleet.plugins.module_utils._archive import sha256_file
from ansible_collections.edgeai.fleet.plugins.module_utils._errors import ArtifactFetchError, CredentialError, HTTPError
from ansible_collections.edgeai.fleet.plugins.module_utils._http import (
    NO_RETRY,
    Client,
    RetryPolicy,
    Throttle,
    basic_auth,
    copy_body,
    redact_url,
    require_secure_credentials,
    split_userinfo,
    url_secrets,
)

# How the credentials of a download are named in a refusal.
CREDENTIALS = "the artifact's credentials (url_token, url_username/url_password, headers, user:pass@ in url)"


def url_credentials(params):
    """The credential headers of model_artifact's ``url``: ``headers`` (all of them: the
    option is secret), then ``url_token`` as a bearer token or ``url_username``/``url_password``
    as basic auth."""
    credentials = dict(params.get("headers") or {})
    if params.get("url_token"):
        credentials["Authorization"] = "Bearer {}".format(params["url_token"])
    elif params.get("url_username"):
        credentials["Authorization"] = basic_auth(params["url_username"], params.get("url_password"))
    return credentials


def shown_url(module, name="url"):
    """The redacted form of the module's ``name`` option for its results and messages (None
    without one). The option is no_log, so Ansible masks its value everywhere; a URL with
    nothing secret in it (no user:pass@, no signature or token parameter, no fragment) is
    unmasked again, and the secret parts of any other are masked wherever they appear."""
    url = module.params.get(name)
    if not url:
        return None
    shown = redact_url(url)
    if shown == url:
        module.no_log_values.discard(url)
    else:
        module.no_log_values.update(s for s in url_secrets(url) if len(s) >= 6)
    return shown


def check_credentials(url, headers=None, allow_insecure=False):
    """Refuse, before anything is fetched, a download that would send credentials (any of
    ``headers``, or a ``user:pass@`` in ``url``) over plain http to another machine."""
    if headers or split_userinfo(url)[1]:
        require_secure_credentials(url, CREDENTIALS, allow_insecure=allow_insecure)


class Downloader:
    """Downloads into ``<part>`` and resumes with an HTTP Range request when the part
    file already holds bytes (from an earlier attempt or an earlier run).

    ``headers`` are all treated as credentials (the module's ``headers`` option is secret):
    they go only to the URL's own scheme, host and port, over https or loopback http
    unless ``allow_insecure_credentials``; a redirect elsewhere is followed without them."""

    def __init__(self, headers=None, validate_certs=True, ca_path=None, timeout=60.0,
                 retries=3, backoff=1.0, opener=open_url, sleep=time.sleep, rate_limit=0,
                 allow_insecure_credentials=False, retry=None):
        self.credentials = dict(headers or {})
        self.rate_limit = rate_limit
        self.allow_insecure_credentials = allow_insecure_credentials
        self._sleep = sleep
        self.retry = retry if retry is not None else RetryPolicy(retries, backoff, sleep=sleep)
        self.http = Client(timeout=timeout, validate_certs=validate_certs, ca_path=ca_path, retry=NO_RETRY,
                           allow_insecure_credentials=allow_insecure_credentials, opener=opener,
                           error=ArtifactFetchError, what="the artifact store",
                           secrets=[v for v in self.credentials.values() if isinstance(v, str)])

    def fetch(self, url, part, sha256, space_check=None):
        """Download ``url`` into ``part`` and verify its sha256. Returns a dict with
        ``bytes`` (transferred now), ``resumed`` and ``attempts``."""
        shown = redact_url(url)
        check_credentials(url, self.credentials, self.allow_insecure_credentials)
        attempts = 0
        transferred = 0
        resumed = False
        restarted = False
        while True:
            offset = os.path.getsize(part) if os.path.exists(part) else 0
            attempts += 1
            try:
                resp = self.http.request("GET", url, headers={"Range": f"bytes={offset}-"} if offset else None,
                                         credentials=self.credentials, follow_redirects=True, stream=True,
                                         what_credentials=CREDENTIALS)
            except CredentialError:
                raise
            except HTTPError as exc:  # no answer
                if getattr(exc, "retryable", False) and self.retry.again(attempts):
                    continue
                raise self.http.fail(f"download of {shown} failed after {attempts} attempts: {exc.msg}",
                                     url=url) from None
            status = resp.status
            if status == 416 and offset:
                resp.close()
                # the server has nothing past our offset: the part may already be whole
                if sha256_file(part) == sha256:
                    return {"bytes": transferred, "resumed": True, "attempts": attempts}
                os.unlink(part)
                continue
            if status >= 400:
                resp.close()
                if self.retry.retryable_status(status) and \
                        self.retry.again(attempts, self.retry.retry_after(resp.header("Retry-After"))):
                    continue
                raise self.http.fail(f"download of {shown} failed: HTTP {status} {resp.reason}".rstrip(),
                                     status=status, url=url)
            mode = "wb"
            if status == 206 and offset:
                start = _content_range_start(resp.header("Content-Range"))
                if start != offset:
                    resp.close()
                    os.unlink(part)
                    continue
                mode = "ab"
                resumed = True
            elif status != 200:
                resp.close()
                raise self.http.fail(f"download of {shown} failed: unexpected HTTP {status}", status=status, url=url)
            length = resp.header("Content-Length")
            length = int(length) if length and length.isdigit() else None
            try:
                if space_check is not None and length is not None:
                    space_check(length)
                throttle = Throttle(self.rate_limit, sleep=self._sleep)
                with open(part, mode) as out:
                    written, error = copy_body(resp.raw, out, throttle)
            finally:
                resp.close()
            transferred += written
            complete = error is None and (length is None or written == length)
            if not complete:
                if error is None:
                    error = f"connection closed after {written} of {length} bytes"
                if self.retry.again(attempts):
                    continue
                raise self.http.fail(f"download of {shown} interrupted after {attempts} attempts: {error}", url=url,
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
            raise self.http.fail(f"sha256 mismatch for {shown}: expected {sha256}, got {actual}", url=url,
                                 expected_sha256=sha256, actual_sha256=actual)


def _content_range_start(value):
    match = re.match(r"^\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*$", value or "")
    return int(match.group(1)) if match else None
