# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the edgeai.fleet collection: not a public API, may change without notice.
"""A reader of OCI registries (distribution HTTP API v2): manifests and blobs, with basic
auth or bearer tokens, on the one HTTP layer (plugins/module_utils/_http.py).

The registry's credentials go to the registry and, to get a bearer token, to a token realm
on the registry's own host (or a host the caller allows); never over plain http to another
machine, never along a redirect to another host (blob downloads are often redirected to a
storage service: those requests carry no credentials)."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import time
from urllib.parse import urlencode

from ansible.module_utils.urls import open_url
from ansible_collections.edgeai.fleet.plugins.module_utils._errors import (
    ArtifactError,
    ArtifactFetchError,
    CredentialError,
    HTTPError,
)
from ansible_collections.edgeai.fleet.plugins.module_utils._http import (
    Client,
    RetryPolicy,
    Throttle,
    basic_auth,
    copy_body,
    origin,
    redact_url,
    require_secure_credentials,
)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# How the registry's credentials are named in a refusal.
CREDENTIALS = "the registry's credentials (registry_username/registry_password, or its token)"
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
         "armv7l": "arm", "armv6l": "arm"}
MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)


def parse_image_ref(ref):
    """``registry[:port]/repository[:tag|@sha256:...]`` -> (registry, repository, reference)."""
    if "/" not in ref:
        raise ArtifactError(f"image {ref!r} must name its registry (registry.example:5000/repo:tag)")
    registry, rest = ref.split("/", 1)
    if "." not in registry and ":" not in registry and registry != "localhost":
        raise ArtifactError(f"image {ref!r} must name its registry (registry.example:5000/repo:tag)")
    if "@" in rest:
        repository, reference = rest.split("@", 1)
    elif ":" in rest.rsplit("/", 1)[-1]:
        repository, reference = rest.rsplit(":", 1)
    else:
        repository, reference = rest, "latest"
    if not re.match(r"^[a-z0-9]+(?:[._/-][a-z0-9]+)*$", repository):
        raise ArtifactError(f"image {ref!r}: {repository!r} is not a valid repository name")
    return registry, repository, reference


def _auth_challenge(header):
    """Parse a WWW-Authenticate header into (scheme, params)."""
    if not header:
        return None, {}
    scheme, dummy, rest = header.partition(" ")
    params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    return scheme.lower(), params


class RegistryClient:
    """Reads manifests and blobs from a registry (distribution HTTP API v2), with basic
    auth or bearer tokens fetched from the realm the registry names, when that realm is
    on the registry's host or in ``auth_hosts`` (host or host:port), over https (or
    loopback http; any http with ``allow_insecure_credentials``)."""

    def __init__(self, registry, username=None, password=None, validate_certs=True,
                 ca_path=None, timeout=60.0, scheme="https", opener=open_url, rate_limit=0,
                 retries=3, backoff=1.0, sleep=time.sleep, allow_insecure_credentials=False, auth_hosts=()):
        self.registry = registry
        self.base = f"{scheme}://{registry}"
        self.host = origin(self.base)[1]
        self.auth_hosts = [str(h).strip().lower() for h in (auth_hosts or ()) if str(h).strip()]
        self.rate_limit = rate_limit
        self.username = username
        self.password = password
        self.allow_insecure_credentials = allow_insecure_credentials
        self._sleep = sleep
        self.retry = RetryPolicy(retries, backoff, sleep=sleep)
        self.http = Client(timeout=timeout, validate_certs=validate_certs, ca_path=ca_path, retry=self.retry,
                           allow_insecure_credentials=allow_insecure_credentials, opener=opener,
                           error=ArtifactFetchError, what=f"registry {registry}", secrets=[password])
        self._auth = None

    def get(self, path, accept=None):
        """GET ``path`` of the registry, answering one auth challenge; returns the streamed
        :class:`Response` of a 200."""
        url = self.base + path
        for _dummy in range(2):
            headers = {"Accept": accept} if accept else {}
            credentials = {"Authorization": self._auth} if self._auth else {}
            resp = self.http.request("GET", url, headers=headers, credentials=credentials, follow_redirects=True,
                                     stream=True, what_credentials=CREDENTIALS)
            if resp.status == 401 and self._authenticate(resp.header("WWW-Authenticate")):
                resp.close()
                continue
            if resp.status != 200:
                resp.close()
                raise self.http.fail(f"registry {self.base}: GET {path}: HTTP {resp.status} {resp.reason}".rstrip(),
                                     status=resp.status, url=url)
            return resp
        raise ArtifactError(f"registry {self.base} refused the credentials for {path}")

    def _auth_host_allowed(self, realm):
        dummy, host, port = origin(realm)
        return host == self.host or host in self.auth_hosts or f"{host}:{port}" in self.auth_hosts

    def _check_realm(self, realm):
        """A token realm must be an http(s) URL on the registry's host (or an allowed one),
        and https unless it is on loopback or plain http is allowed; nothing is sent otherwise."""
        scheme, host, dummy = origin(realm)
        shown = redact_url(realm)
        if scheme not in ("http", "https") or not host:
            raise CredentialError(f"registry {self.registry} names a token realm that is not an http(s) URL "
                                  f"({shown}); refused", url=shown)
        if not self._auth_host_allowed(realm):
            raise CredentialError(
                f"registry {self.registry} sends us to {host} for a token ({shown}), a host that is not the "
                f"registry's own; refused, nothing was sent there. If you trust {host} to issue tokens for this "
                "registry, add it to registry_auth_hosts", url=shown)
        require_secure_credentials(realm, "a registry token request", allow_insecure=self.allow_insecure_credentials)

    def _authenticate(self, header):
        if self._auth and self._auth.startswith("Basic"):
            return False  # already tried
        scheme, params = _auth_challenge(header)
        if scheme == "basic":
            if not self.username:
                raise ArtifactError(f"registry {self.base} wants credentials (registry_username/registry_password)")
            self._auth = basic_auth(self.username, self.password)
            return True
        if scheme == "bearer" and params.get("realm"):
            if self._auth and self._auth.startswith("Bearer"):
                return False
            realm = params["realm"]
            self._check_realm(realm)
            query = dict((k, v) for k, v in params.items() if k in ("service", "scope"))
            url = realm + (("&" if "?" in realm else "?") + urlencode(query) if query else "")
            credentials = {"Authorization": basic_auth(self.username, self.password)} if self.username else {}
            try:
                resp = self.http.request("GET", url, credentials=credentials, follow_redirects=True, ok=(200,),
                                         what_credentials=CREDENTIALS)
            except CredentialError:
                raise
            except HTTPError as exc:
                raise self.http.fail(f"registry token from {redact_url(realm)} failed: {exc.msg}", status=exc.status,
                                     url=realm) from None
            data = resp.json()
            token = (data.get("token") or data.get("access_token")) if isinstance(data, dict) else None
            if not token:
                raise ArtifactError(f"registry token endpoint {redact_url(realm)} returned no token")
            self.http.secrets.add(token)
            self._auth = "Bearer " + token
            return True
        return False

    def manifest(self, repository, reference):
        """Return (digest, media type, manifest dict) for a tag or digest."""
        resp = self.get(f"/v2/{repository}/manifests/{reference}", accept=", ".join(MANIFEST_TYPES))
        raw = resp.read()
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        if reference.startswith("sha256:") and reference != digest:
            raise ArtifactError(f"manifest digest mismatch: asked for {reference}, got {digest}")
        try:
            data = json.loads(raw)
        except ValueError:
            raise ArtifactError(f"registry returned a manifest that is not JSON for {repository}") from None
        media = data.get("mediaType") or resp.header("Content-Type", "").split(";")[0]
        return digest, media, data

    def image_manifest(self, repository, reference, arch=None):
        """Resolve a tag to the image manifest for this machine's architecture."""
        digest, media, data = self.manifest(repository, reference)
        if "manifests" in data:
            arch = arch or _ARCH.get(platform.machine(), platform.machine())
            entries = data.get("manifests") or []
            chosen = [m for m in entries
                      if (m.get("platform") or {}).get("architecture") == arch
                      and (m.get("platform") or {}).get("os", "linux") == "linux"]
            if not chosen and len(entries) == 1:
                chosen = entries
            if not chosen:
                raise ArtifactError(f"image {repository}:{reference} has no manifest for linux/{arch}")
            digest, media, data = self.manifest(repository, chosen[0]["digest"])
        if "layers" not in data:
            raise ArtifactError(f"unsupported manifest type {media!r} for {repository}")
        return digest, data

    def blob(self, repository, digest, path, space_check=None):
        """Download a blob into ``path`` and verify it against its digest; a transfer cut
        short is tried again under the retry policy."""
        algo, dummy, expected = digest.partition(":")
        if algo != "sha256" or not _SHA256.match(expected):
            raise ArtifactError(f"unsupported blob digest {digest!r}")
        attempt = 0
        while True:
            attempt += 1
            resp = self.get(f"/v2/{repository}/blobs/{digest}")
            length = resp.header("Content-Length")
            length = int(length) if length and length.isdigit() else None
            hasher = hashlib.sha256()
            try:
                if space_check is not None and length is not None:
                    space_check(length)
                with open(path, "wb") as out:
                    written, error = copy_body(resp.raw, out, Throttle(self.rate_limit, sleep=self._sleep), hasher)
            finally:
                resp.close()
            if error is None and (length is None or written == length):
                break
            if not self.retry.again(attempt):
                os.unlink(path)
                reason = error or f"connection closed after {written} of {length} bytes"
                raise self.http.fail(f"blob {digest} of {repository}: transfer interrupted after {attempt} attempts: "
                                     f"{reason}", url=self.base)
        if hasher.hexdigest() != expected:
            os.unlink(path)
            raise ArtifactError(f"blob {digest} of {repository} failed verification (got sha256:{hasher.hexdigest()})")
        return os.path.getsize(path)
