# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the edgeai.fleet collection: not a public API, may change without notice.
"""The one HTTP layer of the device-side clients (the inference server, artifact downloads,
OCI registries, the event API and the event relay). Standard library + ansible.module_utils
only, Python 3.8 compatible: it runs on the device.

- transport: ``ansible.module_utils.urls.open_url``, one timeout per request, TLS options,
  ``~/.netrc`` never read (the caller says which credentials go where);
- one retry policy (:class:`RetryPolicy`): exponential backoff with jitter, on connection
  errors and 408/429/5xx, honouring ``Retry-After`` up to a cap;
- errors are :class:`HTTPError` (an ``EdgeAIError``) carrying the status and a redacted URL;
- credentials (``Authorization`` and any header the caller marks as one, ``user:pass@`` in a
  URL) travel only over https, or over plain http to the device's own loopback, unless the
  caller allows it; they never follow a redirect to another scheme, host or port;
- no message names a credential: URLs are redacted (``user:pass@``, signature and token
  query parameters, fragments), ``Authorization`` values are masked, and so is every
  secret the client knows;
- one Basic-auth helper (:func:`basic_auth`) and one throttled chunk reader (:func:`copy_body`).
"""

from __future__ import annotations

import base64
import email.utils
import http.client
import ipaddress
import json
import random
import re
import socket
import ssl
import time
import urllib.error
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

from ansible.module_utils.urls import open_url
from ansible_collections.edgeai.fleet.plugins.module_utils._errors import CredentialError, HTTPError

CHUNK = 1024 * 1024
REDACTED = "REDACTED"
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# 501 Not Implemented and 505 HTTP Version Not Supported do not change on a retry.
_PERMANENT_5XX = frozenset({501, 505})
# Query parameters whose values are credentials: presigned URLs (X-Amz-Signature,
# X-Amz-Credential, X-Amz-Security-Token, X-Goog-Signature, Azure's sig, CloudFront's
# Signature/Policy/Key-Pair-Id), tokens, keys, passwords. Matched anywhere in the name.
_SECRET_PARAM = re.compile(r"sig|token|secret|pass|pwd|key|auth|cred|session|policy|jwt|code|access", re.I)
_URL_IN_TEXT = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>()\[\]{}]+")
_AUTH_IN_TEXT = re.compile(r"(?i)\b((?:proxy-)?authorization)([\"']?\s*[:=]\s*[\"']?)"
                           r"(?:(?:bearer|basic|token|digest)\s+)?[^\s\"',}]+")
_SCHEME_IN_TEXT = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{6,}")


# -- redaction -------------------------------------------------------------------------
def redact_url(url):
    """``url`` with nothing secret in it: ``user:pass@`` becomes ``REDACTED@``, the value of
    every query parameter that looks like a credential (signatures, tokens, keys) becomes
    ``REDACTED``, and a fragment is dropped. Other parts are kept as written."""
    if not url:
        return url
    text = str(url)
    try:
        parts = urlsplit(text)
    except ValueError:
        return "<a URL that cannot be parsed>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = REDACTED + "@" + netloc.rsplit("@", 1)[1]
    query = parts.query
    if query:
        pieces = []
        for piece in query.split("&"):
            name, eq, value = piece.partition("=")
            if eq and value and _SECRET_PARAM.search(unquote(name)):
                value = REDACTED
            pieces.append(name + eq + value)
        query = "&".join(pieces)
    fragment = REDACTED if parts.fragment else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def url_secrets(url):
    """The secret strings inside ``url`` (the userinfo and the values of credential query
    parameters), raw and percent-decoded, for a caller that must mask them elsewhere."""
    found = set()
    try:
        parts = urlsplit(str(url or ""))
    except ValueError:
        return found
    if "@" in parts.netloc:
        userinfo = parts.netloc.rsplit("@", 1)[0]
        user, dummy, password = userinfo.partition(":")
        found.update([userinfo, unquote(userinfo)])
        if password:
            found.update([password, unquote(password)])
    for piece in parts.query.split("&") if parts.query else ():
        name, eq, value = piece.partition("=")
        if eq and value and _SECRET_PARAM.search(unquote(name)):
            found.update([value, unquote(value)])
    return set(s for s in found if s)


def redact_text(text, secrets=()):
    """``text`` with every URL redacted (:func:`redact_url`), every ``Authorization`` value
    and every ``Bearer``/``Basic`` credential masked, and each string of ``secrets`` replaced."""
    if text is None:
        return text
    text = str(text)
    for secret in sorted((s for s in secrets if s and len(str(s)) >= 3), key=len, reverse=True):
        text = text.replace(str(secret), REDACTED)
    text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
    text = _AUTH_IN_TEXT.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)
    text = _SCHEME_IN_TEXT.sub(lambda m: m.group(1) + " " + REDACTED, text)
    return text


# -- credentials -------------------------------------------------------------------------
def basic_auth(username, password):
    """The ``Authorization`` value of HTTP basic auth (RFC 7617, UTF-8)."""
    raw = "{}:{}".format(username or "", password or "").encode("utf-8")
    return "Basic " + base64.b64encode(raw).decode("ascii")


def is_loopback(host):
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1): traffic that never
    leaves the device."""
    host = (host or "").strip("[]").lower().rstrip(".")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def origin(url):
    """``(scheme, host, port)`` of ``url``, with the scheme's default port filled in."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "", "", None
    scheme = (parts.scheme or "").lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        port = {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


def credentials_allowed(url, allow_insecure=False):
    """Whether credentials may be sent to ``url``: over https, over http to a loopback
    address, or anywhere when ``allow_insecure``."""
    scheme, host, dummy = origin(url)
    return scheme == "https" or (scheme == "http" and (allow_insecure or is_loopback(host)))


def require_secure_credentials(url, what="credentials", option="allow_insecure_credentials", allow_insecure=False):
    """Raise :class:`CredentialError` unless :func:`credentials_allowed`; nothing is sent."""
    if credentials_allowed(url, allow_insecure):
        return
    scheme, host, dummy = origin(url)
    if scheme not in ("http", "https"):
        raise CredentialError(f"refusing to send {what} to {redact_url(url)}: only https (or http) URLs are supported",
                              url=redact_url(url))
    raise CredentialError(
        f"refusing to send {what} over plain http to {host} ({redact_url(url)}): anyone on the network could read "
        f"them. Use https, or set {option}: true to accept that risk",
        url=redact_url(url))


def split_userinfo(url):
    """``(url without user:pass@, basic auth value or None)``."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, host = parts.netloc.rsplit("@", 1)
    user, dummy, password = userinfo.partition(":")
    stripped = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return stripped, basic_auth(unquote(user), unquote(password))


# -- retry policy ----------------------------------------------------------------------
def backoff_delay(attempt, initial, maximum=30.0, rng=None):
    """Exponential backoff with jitter: a random point in the upper half of the window
    ``initial * 2**(attempt-1)`` (at most ``maximum``)."""
    window = min(maximum, initial * (2 ** max(0, attempt - 1)))
    return (rng or random).uniform(window / 2.0, window)


class RetryPolicy:
    """When to try a request again and how long to wait first. ``retries`` is the number of
    attempts after the first. ``sleep``, ``clock`` (wall time, for ``Retry-After`` dates)
    and ``rng`` are injectable for tests."""

    def __init__(self, retries=3, backoff=1.0, max_delay=30.0, retry_after_cap=60.0,
                 sleep=time.sleep, clock=time.time, rng=None):
        self.retries = max(0, int(retries or 0))
        self.backoff = max(0.0, float(backoff or 0.0))
        self.max_delay = max_delay
        self.retry_after_cap = retry_after_cap
        self.sleep = sleep
        self.clock = clock
        self.rng = rng or random.Random()

    @staticmethod
    def retryable_status(status):
        """408, 429 and the 5xx statuses that can change on a retry (not 501 and 505)."""
        return status in (408, 429) or (status is not None and 500 <= status <= 599 and status not in _PERMANENT_5XX)

    @staticmethod
    def retryable_error(exc):
        """Connection errors and timeouts are worth another attempt; a refused TLS
        certificate or a malformed URL is not."""
        reason = getattr(exc, "reason", exc)
        # a TLS connection closed under it (a cut link, a restarted peer) is a connection error
        if isinstance(reason, (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)):
            return True
        if isinstance(reason, (ssl.SSLError, ssl.CertificateError)):
            return False
        if isinstance(exc, urllib.error.URLError) and isinstance(reason, str):
            return "unknown url type" not in reason and "no host given" not in reason
        return isinstance(exc, (urllib.error.URLError, TimeoutError, socket.timeout, ConnectionError,
                                http.client.HTTPException, OSError))

    def retry_after(self, value):
        """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
        if value is None:
            return None
        value = str(value).strip()
        if value.isdigit():
            return float(value)
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        return max(0.0, when.timestamp() - self.clock())

    def delay(self, attempt, retry_after=None):
        """Seconds to wait before attempt ``attempt + 1``: the backoff with jitter, or what
        the server asked for when that is longer, never more than ``retry_after_cap``."""
        wait = backoff_delay(attempt, self.backoff, self.max_delay, self.rng)
        if retry_after is not None:
            wait = max(wait, min(float(retry_after), self.retry_after_cap))
        return wait

    def again(self, attempt, retry_after=None):
        """After failed attempt number ``attempt`` (1-based): wait and return True when
        another attempt is allowed, else return False at once."""
        if attempt > self.retries:
            return False
        self.sleep(self.delay(attempt, retry_after))
        return True


NO_RETRY = RetryPolicy(retries=0)


# -- throttled reading -------------------------------------------------------------------
class Throttle:
    """Keeps a transfer at or under ``rate`` bytes per second (0: no limit), so a device
    leaves the rest of a thin site link to the others and to its live traffic."""

    def __init__(self, rate=0, clock=time.monotonic, sleep=time.sleep):
        self.rate = rate or 0
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


def copy_body(source, out, throttle=None, hasher=None, chunk=CHUNK):
    """Copy the readable ``source`` (a response) into ``out`` in chunks, through ``throttle``
    and ``hasher`` when given. Returns ``(bytes written, error)``: error is None when the
    body ended, else the exception that cut it (the bytes before it are written)."""
    written = 0
    while True:
        try:
            block = source.read(chunk)
        except (TimeoutError, socket.timeout, ConnectionError, http.client.HTTPException, OSError,
                ValueError) as exc:
            return written, exc
        if not block:
            return written, None
        out.write(block)
        if hasher is not None:
            hasher.update(block)
        written += len(block)
        if throttle is not None:
            throttle.take(len(block))


# -- requests ----------------------------------------------------------------------------
class Response:
    """One answer: ``status``, ``headers``, the final ``url`` (after redirects), and the
    body, read on demand (``read()``) or streamed from ``raw``."""

    def __init__(self, status, headers, url, raw, reason=""):
        self.status = status
        self.headers = headers if headers is not None else {}
        self.url = url
        self.raw = raw
        self.reason = reason or ""
        self._body = None

    def header(self, name, default=None):
        try:
            value = self.headers.get(name)
        except AttributeError:
            value = None
        return default if value is None else value

    def read(self):
        if self._body is None:
            try:
                self._body = self.raw.read() if self.raw is not None else b""
            except (OSError, http.client.HTTPException, ValueError):
                self._body = b""
            self.close()
        return self._body

    def json(self):
        raw = self.read()
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode("utf-8", "replace")

    def close(self):
        if self.raw is not None:
            try:
                self.raw.close()
            except Exception:  # pylint: disable=broad-except
                pass

    # file-like, for code that reads a streamed body directly
    def getcode(self):
        return self.status

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def error_text(body, limit=500):
    """The error a server put in its body: the ``error`` field of a JSON object, or the
    start of the text."""
    if body is None:
        return ""
    try:
        data = json.loads(body)
        if isinstance(data, dict) and "error" in data:
            return str(data["error"])
    except (ValueError, TypeError):
        pass
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    return text.strip()[:limit]


class Client:
    """Requests of one client. ``what`` names the peer in messages ("the event API");
    ``error`` is the :class:`HTTPError` subclass raised for transport failures and
    refused statuses; ``secrets`` are masked in every message (the client's own tokens).
    Credentials are passed per request (``credentials=``) and are subject to the rules
    in the module docstring; ``option`` names the setting that allows plain http."""

    def __init__(self, timeout=30.0, validate_certs=True, ca_path=None, retry=None,
                 allow_insecure_credentials=False, option="allow_insecure_credentials",
                 opener=open_url, error=HTTPError, what="the server", secrets=(), max_redirects=5):
        self.timeout = timeout
        self.validate_certs = validate_certs
        self.ca_path = ca_path
        self.retry = retry if retry is not None else RetryPolicy()
        self.allow_insecure_credentials = allow_insecure_credentials
        self.option = option
        self._open = opener
        self.error = error
        self.what = what
        self.secrets = set(s for s in secrets if s)
        self.max_redirects = max_redirects
        self.attempts = 0

    def redact(self, text):
        return redact_text(text, self.secrets)

    def fail(self, msg, status=None, url=None, body=None, error=None, **details):
        cls = error or self.error
        return cls(self.redact(msg), status=status, url=redact_url(url) if url else None, body=body, **details)

    def request(self, method, url, data=None, headers=None, credentials=None, ok=None, timeout=None,
                follow_redirects=False, stream=False, retry=None, prepare=None, what_credentials="credentials"):
        """Send a request and return a :class:`Response`.

        ``credentials`` are headers that go only where credentials may go (and never across a
        redirect to another origin); a ``user:pass@`` in ``url`` becomes one. ``ok``: the
        statuses to accept, others raise ``error``; None returns any status (after the
        retries a retryable one gets). ``prepare(attempt)`` returns headers made fresh for
        each attempt (signatures). With ``stream`` the body stays unread in ``raw``."""
        policy = retry if retry is not None else self.retry
        self.secrets.update(url_secrets(url))
        url, userinfo = split_userinfo(url)
        credentials = dict(credentials or {})
        if userinfo and "Authorization" not in credentials:
            credentials["Authorization"] = userinfo
        self.secrets.update(v for v in credentials.values() if isinstance(v, str))
        for value in list(credentials.values()):
            if isinstance(value, str) and " " in value:
                self.secrets.add(value.split(" ", 1)[1])
        attempt = 0
        while True:
            attempt += 1
            self.attempts += 1
            extra = dict(prepare(attempt) if prepare else {})
            try:
                resp = self._send(method, url, data, dict(headers or {}, **extra), credentials, timeout,
                                  follow_redirects, what_credentials)
            except CredentialError:
                raise
            except HTTPError as exc:  # a transport failure, already described
                exc.retryable = exc.details.pop("retryable", False)
                exc.attempts = attempt
                if exc.retryable and policy.again(attempt):
                    continue
                raise
            if ok is not None and resp.status in ok:
                break
            if policy.retryable_status(resp.status) and attempt <= policy.retries:
                retry_after = policy.retry_after(resp.header("Retry-After"))
                resp.close()
                policy.again(attempt, retry_after)
                continue
            break
        if ok is not None and resp.status not in ok:
            body = resp.read()
            detail = error_text(body)
            reason = f"HTTP {resp.status}" + (f": {detail}" if detail else (f" {resp.reason}" if resp.reason else ""))
            raise self.fail(f"{method} {redact_url(url)}: {reason}", status=resp.status, url=url, body=body)
        if not stream:
            resp.read()
        return resp

    def _send(self, method, url, data, headers, credentials, timeout, follow_redirects, what_credentials):
        hops = 0
        current = url
        while True:
            scheme = origin(current)[0]
            if scheme not in ("http", "https"):
                raise self.fail(f"{method} {redact_url(current)}: only http and https URLs are supported", url=current)
            if credentials:
                require_secure_credentials(current, what_credentials, self.option, self.allow_insecure_credentials)
            sent = dict(headers)
            sent.update(credentials)
            try:
                raw = self._open(current, data=data, headers=sent, method=method,
                                 timeout=timeout or self.timeout, validate_certs=self.validate_certs,
                                 ca_path=self.ca_path, follow_redirects="none", use_netrc=False, decompress=False)
                return Response(raw.getcode(), raw.headers, current, raw, getattr(raw, "reason", ""))
            except urllib.error.HTTPError as exc:
                status = exc.code
                location = exc.headers.get("Location") if exc.headers is not None else None
                if not (follow_redirects and status in REDIRECT_STATUSES and location):
                    return Response(status, exc.headers, current, exc if exc.fp is not None else None,
                                    getattr(exc, "reason", ""))
                _close(exc)
                hops += 1
                if hops > self.max_redirects:
                    raise self.fail(f"{method} {redact_url(url)}: more than {self.max_redirects} redirects",
                                    status=status, url=url) from None
                target, target_userinfo = split_userinfo(urljoin(current, location))
                if origin(target) != origin(current):
                    # another scheme, host or port: what was meant for this one stays here
                    credentials = {}
                elif target_userinfo and "Authorization" not in credentials:
                    credentials = dict(credentials, Authorization=target_userinfo)
                if status == 303 or (status in (301, 302) and method == "POST"):
                    method, data = ("HEAD" if method == "HEAD" else "GET"), None
                    headers = dict((k, v) for k, v in headers.items() if k.lower() != "content-type")
                current = target
            except (urllib.error.URLError, TimeoutError, socket.timeout, ConnectionError,
                    http.client.HTTPException, OSError, ValueError) as exc:
                reason = getattr(exc, "reason", None) or exc
                raise self.fail(f"{method} {redact_url(current)}: cannot reach {self.what}: {reason}", url=current,
                                retryable=RetryPolicy.retryable_error(exc)) from None


def _close(resp):
    try:
        resp.close()
    except Exception:  # pylint: disable=broad-except
        pass
