# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one HTTP layer of the device-side clients (plugins/module_utils/_http.py): the retry
policy (backoff, jitter, Retry-After, with an injected sleep, clock and random source),
redirects, the credential rules, redaction in every message, the Basic-auth helper, the
throttled chunk reader. Servers are real http.server instances on loopback."""

from __future__ import annotations

import hashlib
import io
import json
import random
import ssl
import urllib.error
from email.utils import formatdate

import pytest
import trustme
from ansible_collections.edgeai.fleet.plugins.module_utils._download import Downloader
from ansible_collections.edgeai.fleet.plugins.module_utils._errors import (
    ArtifactFetchError,
    CredentialError,
    EdgeAIError,
    HTTPError,
    ServerError,
    WebhookError,
)
from ansible_collections.edgeai.fleet.plugins.module_utils._http import (
    Client,
    RetryPolicy,
    Throttle,
    backoff_delay,
    basic_auth,
    copy_body,
    credentials_allowed,
    is_loopback,
    redact_text,
    redact_url,
    split_userinfo,
    url_secrets,
)
from ansible_collections.edgeai.fleet.plugins.module_utils._inference_client import InferenceClient
from ansible_collections.edgeai.fleet.plugins.module_utils._oci_registry import RegistryClient
from ansible_collections.edgeai.fleet.plugins.module_utils._webhook import WebhookClient
from loopback_http import LoopbackNames, Servers, header_values

TOKEN = "tok-7f3a9c51e2"
SIG = "3b9f0c2d8e7a61f45b0c9d8e7f6a5b4c"
PASSWORD = "pw-S3cr3t-91"


@pytest.fixture
def servers(tmp_path):
    group = Servers(trustme.CA(), tmp_path)
    yield group
    group.close()


class Sleeps:
    """An injected sleep: records what it was asked to wait, waits nothing."""

    def __init__(self):
        self.waits = []

    def __call__(self, seconds):
        self.waits.append(seconds)


class Upper:
    """A random source whose uniform(a, b) is always b: the top of the jitter window."""

    @staticmethod
    def uniform(low, high):
        return high


# -- retry policy ------------------------------------------------------------------------
def test_backoff_doubles_up_to_the_cap():
    policy = RetryPolicy(retries=6, backoff=1.0, max_delay=8.0, rng=Upper())
    assert [policy.delay(n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_jitter_stays_in_the_upper_half_of_the_window_and_varies():
    rng = random.Random(7)
    delays = [backoff_delay(3, 0.5, 30.0, rng) for _attempt in range(200)]
    assert all(1.0 <= d <= 2.0 for d in delays)  # window 0.5 * 2**2 = 2 s
    assert len(set(round(d, 6) for d in delays)) > 150  # jitter, not a constant


def test_again_sleeps_between_attempts_and_stops_after_the_retries():
    sleeps = Sleeps()
    policy = RetryPolicy(retries=2, backoff=1.0, sleep=sleeps, rng=Upper())
    assert policy.again(1) is True
    assert policy.again(2) is True
    assert policy.again(3) is False
    assert sleeps.waits == [1.0, 2.0]  # nothing waited once the attempts are used up


def test_retry_after_seconds_and_date_with_an_injected_clock():
    now = 1_700_000_000.0
    policy = RetryPolicy(clock=lambda: now)
    assert policy.retry_after("7") == 7.0
    assert policy.retry_after(formatdate(now + 42, usegmt=True)) == pytest.approx(42.0)
    assert policy.retry_after(formatdate(now - 10, usegmt=True)) == 0.0
    assert policy.retry_after("soon") is None
    assert policy.retry_after(None) is None


def test_retry_after_is_honoured_within_the_cap():
    policy = RetryPolicy(backoff=0.1, retry_after_cap=60.0, rng=Upper())
    assert policy.delay(1, retry_after=5.0) == 5.0  # longer than the backoff: what the server asked
    assert policy.delay(1, retry_after=3600.0) == 60.0  # never more than the cap
    assert policy.delay(4, retry_after=0.0) == pytest.approx(0.8)  # shorter: the backoff


@pytest.mark.parametrize("status, retried", [(408, True), (429, True), (500, True), (502, True), (503, True),
                                             (504, True), (501, False), (505, False), (400, False),
                                             (401, False), (404, False)])
def test_which_statuses_are_retried(servers, status, retried):
    server = servers.start(routes={"/x": (status, {}, b"no")})
    sleeps = Sleeps()
    client = Client(retry=RetryPolicy(retries=2, backoff=0.0, sleep=sleeps))
    resp = client.request("GET", server.url + "/x")
    assert resp.status == status
    assert len(server.log) == (3 if retried else 1)
    assert client.attempts == len(server.log)


def test_503_with_retry_after_then_success(servers):
    answers = [(503, {"Retry-After": "2"}, b"busy"), (200, {}, b"ok")]
    server = servers.start(routes={"/x": lambda req: answers.pop(0)})
    sleeps = Sleeps()
    client = Client(retry=RetryPolicy(retries=3, backoff=0.01, sleep=sleeps, rng=Upper()))
    resp = client.request("GET", server.url + "/x", ok=(200,))
    assert resp.status == 200 and resp.read() == b"ok"
    assert sleeps.waits == [2.0]


def test_connection_errors_are_retried_then_reported_without_a_status(servers):
    server = servers.start()
    port = server.port
    servers.close()  # nothing listens there any more
    sleeps = Sleeps()
    client = Client(retry=RetryPolicy(retries=2, backoff=0.5, sleep=sleeps, rng=Upper()), what="the test server",
                    timeout=2)
    with pytest.raises(HTTPError) as caught:
        client.request("GET", f"http://127.0.0.1:{port}/x")
    assert caught.value.status is None
    assert "cannot reach the test server" in caught.value.msg
    assert caught.value.attempts == 3 and sleeps.waits == [0.5, 1.0]
    assert "retryable" not in caught.value.details


def test_an_untrusted_certificate_is_not_retried(servers):
    server = servers.start(tls=True, routes={"/x": (200, {}, b"ok")})
    sleeps = Sleeps()
    client = Client(retry=RetryPolicy(retries=3, sleep=sleeps))  # the system trust store, not the test CA
    with pytest.raises(HTTPError, match="cannot reach"):
        client.request("GET", server.url + "/x")
    assert sleeps.waits == []
    assert Client(ca_path=servers.ca_path).request("GET", server.url + "/x", ok=(200,)).read() == b"ok"


def test_a_status_outside_ok_raises_the_clients_error_with_status_and_body(servers):
    server = servers.start(routes={"/x": (409, {"Content-Type": "application/json"}, b'{"error": "taken"}')})
    client = Client(error=WebhookError, retry=RetryPolicy(retries=0))
    with pytest.raises(WebhookError) as caught:
        client.request("PUT", server.url + "/x", data=b"{}", ok=(200, 201))
    assert caught.value.status == 409 and "taken" in caught.value.msg
    assert caught.value.url == server.url + "/x"


def test_errors_are_edgeai_errors_with_status_and_url():
    for cls in (ServerError, WebhookError, ArtifactFetchError, CredentialError):
        assert issubclass(cls, HTTPError) and issubclass(cls, EdgeAIError)
    exc = ArtifactFetchError("boom", status=502, url="https://h/x")
    assert (exc.status, exc.url, exc.details) == (502, "https://h/x", {"status": 502})


# -- redirects ---------------------------------------------------------------------------
def test_same_origin_redirect_keeps_credentials_another_origin_drops_them(servers):
    other = servers.start(host="127.0.0.2", routes={"/blob": (200, {}, b"blob")})
    origin = servers.start(routes={
        "/here": (302, {"Location": "/there"}, b""),
        "/there": (200, {}, b"same"),
        "/away": (307, {"Location": other.url + "/blob?X-Amz-Signature=" + SIG}, b""),
    })
    client = Client(retry=RetryPolicy(retries=0))
    creds = {"Authorization": "Bearer " + TOKEN, "X-Api-Key": PASSWORD}
    assert client.request("GET", origin.url + "/here", credentials=creds, follow_redirects=True).read() == b"same"
    assert header_values(origin, "Authorization") == ["Bearer " + TOKEN] * 2
    resp = client.request("GET", origin.url + "/away", credentials=creds, follow_redirects=True)
    assert resp.read() == b"blob" and resp.url.startswith(other.url)
    assert header_values(other, "Authorization") == [] and header_values(other, "X-Api-Key") == []


def test_redirects_are_not_followed_unless_asked_and_are_bounded(servers):
    server = servers.start(routes={"/loop": (302, {"Location": "/loop"}, b"")})
    client = Client(retry=RetryPolicy(retries=0), max_redirects=3)
    assert client.request("GET", server.url + "/loop").status == 302
    with pytest.raises(HTTPError, match="more than 3 redirects"):
        client.request("GET", server.url + "/loop", follow_redirects=True)


def test_see_other_turns_a_post_into_a_get(servers):
    server = servers.start(routes={"/form": (303, {"Location": "/done"}, b""), "/done": (200, {}, b"done")})
    resp = Client(retry=RetryPolicy(retries=0)).request("POST", server.url + "/form", data=b"x=1",
                                                        follow_redirects=True)
    assert resp.read() == b"done"
    assert [r.method for r in server.log] == ["POST", "GET"]


# -- credentials ---------------------------------------------------------------------------
@pytest.mark.parametrize("host, local", [("127.0.0.1", True), ("127.9.9.9", True), ("::1", True),
                                         ("[::1]", True), ("localhost", True), ("LOCALHOST.", True),
                                         ("10.0.0.1", False), ("models.example.test", False),
                                         ("localhost.example.test", False), ("", False)])
def test_loopback(host, local):
    assert is_loopback(host) is local


def test_where_credentials_may_go():
    assert credentials_allowed("https://models.example.test/m.tgz")
    assert credentials_allowed("http://127.0.0.1:8000/v2")
    assert not credentials_allowed("http://models.example.test/m.tgz")
    assert credentials_allowed("http://models.example.test/m.tgz", allow_insecure=True)
    assert not credentials_allowed("ftp://models.example.test/m.tgz", allow_insecure=True)


def test_credentials_over_plain_http_are_refused_before_anything_is_sent(servers):
    server = servers.start(routes={"*": (200, {}, b"ok")})
    opener = LoopbackNames({"models.example.test": "127.0.0.1"})
    client = Client(opener=opener, retry=RetryPolicy(retries=0))
    url = f"http://models.example.test:{server.port}/m"
    with pytest.raises(CredentialError, match="allow_insecure_credentials") as caught:
        client.request("GET", url, credentials={"Authorization": "Bearer " + TOKEN})
    assert TOKEN not in str(caught.value)
    with pytest.raises(CredentialError):  # user:pass@ is a credential too
        client.request("GET", f"http://robot:{PASSWORD}@models.example.test:{server.port}/m")
    assert server.log == [] and opener.calls == []
    # without credentials plain http is fine; with the option, the credentials go
    assert client.request("GET", url).status == 200
    allowed = Client(opener=opener, retry=RetryPolicy(retries=0), allow_insecure_credentials=True)
    assert allowed.request("GET", url, credentials={"Authorization": "Bearer " + TOKEN}).status == 200
    assert header_values(server, "Authorization") == ["Bearer " + TOKEN]


def test_userinfo_becomes_basic_auth_and_leaves_the_url(servers):
    server = servers.start(routes={"*": (200, {}, b"ok")})
    Client(retry=RetryPolicy(retries=0)).request("GET", f"http://robot:{PASSWORD}@127.0.0.1:{server.port}/m")
    assert header_values(server, "Authorization") == [basic_auth("robot", PASSWORD)]
    assert split_userinfo("https://u:p%40ss@h:1/x?q=1") == ("https://h:1/x?q=1", basic_auth("u", "p@ss"))


def test_basic_auth_helper():
    # RFC 7617's example, and UTF-8 for what is not ASCII
    assert basic_auth("Aladdin", "open sesame") == "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
    assert basic_auth("test", "123\u00a3") == "Basic dGVzdDoxMjPCow=="
    assert basic_auth("user", None) == "Basic dXNlcjo="


# -- redaction ---------------------------------------------------------------------------
@pytest.mark.parametrize("url, shown", [
    ("https://models.example.test/m.tgz", "https://models.example.test/m.tgz"),
    (f"https://robot:{PASSWORD}@models.example.test:8443/m.tgz", "https://REDACTED@models.example.test:8443/m.tgz"),
    (f"https://{TOKEN}@models.example.test/m.tgz", "https://REDACTED@models.example.test/m.tgz"),
    (f"https://b.s3.example.test/m.tgz?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAEXAMPLE%2F20240101"
     f"&X-Amz-Expires=900&X-Amz-Signature={SIG}",
     "https://b.s3.example.test/m.tgz?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=REDACTED"
     "&X-Amz-Expires=900&X-Amz-Signature=REDACTED"),
    (f"https://a.blob.example.test/m.tgz?sv=2022-11-02&se=2030-01-01&sp=r&sig={SIG}",
     "https://a.blob.example.test/m.tgz?sv=2022-11-02&se=2030-01-01&sp=r&sig=REDACTED"),
    (f"https://cdn.example.test/m.tgz?Expires=1&Signature={SIG}&Key-Pair-Id=K2",
     "https://cdn.example.test/m.tgz?Expires=1&Signature=REDACTED&Key-Pair-Id=REDACTED"),
    (f"https://store.example.test/m.tgz?token={TOKEN}&version=3", "https://store.example.test/m.tgz?token=REDACTED&version=3"),
    (f"https://store.example.test/m.tgz#access_token={TOKEN}", "https://store.example.test/m.tgz#REDACTED"),
])
def test_redact_url(url, shown):
    assert redact_url(url) == shown
    for secret in (PASSWORD, TOKEN, SIG, "AKIAEXAMPLE"):
        assert secret not in redact_url(url)


def test_url_secrets_lists_what_redaction_hides():
    found = url_secrets(f"https://robot:{PASSWORD}@h/m?X-Amz-Signature={SIG}&version=3")
    assert PASSWORD in found and SIG in found and "3" not in found


def test_redact_text_masks_urls_authorization_and_known_secrets():
    text = (f"GET https://robot:{PASSWORD}@h/m?sig={SIG}: refused; sent Authorization: Bearer {TOKEN} "
            f"and {{'authorization': 'Basic {basic_auth('robot', PASSWORD)[6:]}'}}; server said: bad key hunter22")
    shown = redact_text(text, secrets=["hunter22"])
    for secret in (PASSWORD, SIG, TOKEN, basic_auth("robot", PASSWORD)[6:], "hunter22"):
        assert secret not in shown
    assert "https://REDACTED@h/m?sig=REDACTED" in shown


def test_every_error_message_of_the_client_is_redacted(servers):
    """Unreachable, error status echoing the credentials, a refused redirect loop and a
    refused plain-http request: no message, URL or detail names a credential."""
    echo = servers.start(routes={
        "/echo": lambda req: (500, {}, json.dumps({"error": "denied for " + req.headers.get("Authorization", "") +
                                                   " at " + req.path}).encode()),
        "/loop": (302, {"Location": f"/loop?token={TOKEN}"}, b""),
    })
    gone = servers.start()
    gone_port = gone.port
    gone.shutdown()
    gone.server_close()
    query = f"?X-Amz-Signature={SIG}"
    client = Client(retry=RetryPolicy(retries=0), timeout=2, opener=LoopbackNames({"store.example.test": "127.0.0.1"}))
    creds = {"Authorization": "Bearer " + TOKEN}
    failures = []
    for call in (
        lambda: client.request("GET", f"http://robot:{PASSWORD}@127.0.0.1:{gone_port}/x{query}"),
        lambda: client.request("GET", echo.url + "/echo" + query, credentials=creds, ok=(200,)),
        lambda: client.request("GET", echo.url + "/loop" + query, credentials=creds, follow_redirects=True),
        lambda: client.request("GET", f"http://robot:{PASSWORD}@store.example.test:{echo.port}/x{query}"),
    ):
        with pytest.raises(HTTPError) as caught:
            call()
        failures.append(caught.value)
    assert [type(f) for f in failures] == [HTTPError, HTTPError, HTTPError, CredentialError]
    assert failures[1].status == 500
    for exc in failures:
        text = " ".join([str(exc), exc.msg, str(exc.url), repr(exc.details)])
        for secret in (PASSWORD, TOKEN, SIG, basic_auth("robot", PASSWORD)[6:]):
            assert secret not in text, text


# -- throttled reading -------------------------------------------------------------------
class FakeClock:
    """A clock that only moves when the throttle sleeps: what it asks for is what it waited."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_throttle_holds_the_rate():
    clock = FakeClock()
    throttle = Throttle(1000, clock=clock, sleep=clock.sleep)
    for _chunk in range(10):
        throttle.take(500)
    assert clock.now == pytest.approx(5.0)  # 5000 bytes at 1000 B/s


def test_throttle_without_a_limit_never_waits():
    clock = FakeClock()
    throttle = Throttle(0, clock=clock, sleep=clock.sleep)
    throttle.take(10 ** 9)
    assert clock.now == 0.0


def test_copy_body_throttles_hashes_and_reports_a_cut():
    payload = bytes(range(256)) * 400  # 102400 bytes
    clock = FakeClock()
    out = io.BytesIO()
    hasher = hashlib.sha256()
    written, error = copy_body(io.BytesIO(payload), out, Throttle(10_240, clock=clock, sleep=clock.sleep), hasher,
                               chunk=4096)
    assert (written, error) == (len(payload), None)
    assert out.getvalue() == payload and hasher.hexdigest() == hashlib.sha256(payload).hexdigest()
    assert clock.now == pytest.approx(10.0)  # 100 KiB at 10 KiB/s

    class Cut(io.BytesIO):
        def read(self, size=-1):
            if self.tell() >= 8192:
                raise ConnectionResetError("peer went away")
            return super().read(size)

    out = io.BytesIO()
    written, error = copy_body(Cut(payload), out, chunk=4096)
    assert written == 8192 and out.getvalue() == payload[:8192]
    assert isinstance(error, ConnectionResetError)


def test_a_throttled_download_from_a_server_waits_in_proportion(servers):
    payload = b"x" * 300_000
    server = servers.start(routes={"/m": (200, {}, payload)})
    clock = FakeClock()
    resp = Client(retry=RetryPolicy(retries=0)).request("GET", server.url + "/m", stream=True)
    out = io.BytesIO()
    written, error = copy_body(resp.raw, out, Throttle(100_000, clock=clock, sleep=clock.sleep), chunk=65536)
    resp.close()
    assert (written, error) == (len(payload), None)
    assert 2.9 <= clock.now <= 3.0


# -- every client on this layer -----------------------------------------------------------
def test_every_client_reports_failures_without_credentials(servers, tmp_path):
    echo = servers.start(routes={"*": lambda req: (500, {"Content-Type": "application/json"}, json.dumps(
        {"error": "denied: " + req.headers.get("Authorization", "") + " " + req.path}).encode())})
    gone = servers.start()
    dead = f"127.0.0.1:{gone.port}"
    gone.shutdown()
    gone.server_close()
    query = f"?X-Amz-Signature={SIG}&token={TOKEN}"
    part = str(tmp_path / "m.part")
    bearer = {"Authorization": "Bearer " + TOKEN}
    calls = {
        "inference, unreachable": lambda: InferenceClient(url=f"http://robot:{PASSWORD}@{dead}", token=TOKEN,
                                                          timeout=2).server_metadata(),
        "inference, error echoing the token": lambda: InferenceClient(url=echo.url, token=TOKEN).server_metadata(),
        "event API, unreachable": lambda: WebhookClient(f"http://robot:{PASSWORD}@{dead}", token=TOKEN, retries=0,
                                                        timeout=2).request("GET", "/v1/devices/d1" + query),
        "download, unreachable": lambda: Downloader(bearer, retries=0, timeout=2).fetch(
            f"http://robot:{PASSWORD}@{dead}/m.tgz{query}", part, "0" * 64),
        "download, error status": lambda: Downloader(bearer, retries=0).fetch(echo.url + "/m.tgz" + query, part,
                                                                              "0" * 64),
        "registry, unreachable": lambda: RegistryClient(dead, "robot", PASSWORD, scheme="http", retries=0,
                                                        timeout=2).manifest("m", "1"),
        "registry, error status": lambda: RegistryClient(echo.url.split("://")[1], "robot", PASSWORD, scheme="http",
                                                         retries=0).manifest("m", "1"),
    }
    for name, call in calls.items():
        with pytest.raises(HTTPError) as caught:
            call()
        exc = caught.value
        text = " ".join([str(exc), exc.msg, str(exc.url), repr(exc.details)])
        for secret in (PASSWORD, TOKEN, SIG):
            assert secret not in text, (name, text)


@pytest.mark.parametrize("error, retryable", [
    (ssl.SSLEOFError(8, "EOF occurred in violation of protocol"), True),  # a cut link mid-handshake
    (ssl.SSLZeroReturnError(6, "TLS/SSL connection has been closed (EOF)"), True),
    (ssl.SSLCertVerificationError(1, "certificate verify failed"), False),
    (ssl.SSLError(1, "wrong version number"), False),
])
def test_a_tls_connection_closed_under_it_is_retried_a_refused_certificate_is_not(error, retryable):
    assert RetryPolicy.retryable_error(urllib.error.URLError(error)) is retryable
