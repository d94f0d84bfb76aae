# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the edgeai.fleet collection: not a public API, may change without notice.
"""A reader of OCI registries (distribution HTTP API v2): manifests and blobs."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import platform
import re
from urllib.error import HTTPError, URLError
from urllib.parse import urlencode

from ansible.module_utils.urls import open_url
from ansible_collections.edgeai.fleet.plugins.module_utils._archive import CHUNK
from ansible_collections.edgeai.fleet.plugins.module_utils._errors import ArtifactError
from ansible_collections.edgeai.fleet.plugins.module_utils._http import Throttle

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
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
    auth or bearer tokens (fetched from the realm the registry names)."""

    def __init__(self, registry, username=None, password=None, validate_certs=True,
                 ca_path=None, timeout=60.0, scheme="https", opener=open_url, rate_limit=0):
        self.base = f"{scheme}://{registry}"
        self.rate_limit = rate_limit
        self.username = username
        self.password = password
        self.validate_certs = validate_certs
        self.ca_path = ca_path
        self.timeout = timeout
        self._open = opener
        self._auth = None

    def _basic(self):
        raw = (f"{self.username}:{self.password}").encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")

    def _call(self, url, headers):
        return self._open(url, headers=headers, method="GET", timeout=self.timeout,
                          validate_certs=self.validate_certs, ca_path=self.ca_path,
                          follow_redirects="safe", unredirected_headers=["Authorization"])

    def get(self, path, accept=None):
        url = self.base + path
        for _dummy in range(2):
            headers = {}
            if accept:
                headers["Accept"] = accept
            if self._auth:
                headers["Authorization"] = self._auth
            try:
                return self._call(url, headers)
            except HTTPError as exc:
                if exc.code == 401 and self._authenticate(exc.headers.get("WWW-Authenticate")):
                    continue
                raise ArtifactError(f"registry {self.base}: GET {path}: HTTP {exc.code} {exc.reason}",
                                    status=exc.code) from exc
            except (TimeoutError, URLError, ConnectionError) as exc:
                reason = getattr(exc, "reason", exc)
                raise ArtifactError(f"registry {self.base} unreachable: {reason}") from exc
        raise ArtifactError(f"registry {self.base} refused the credentials for {path}")

    def _authenticate(self, header):
        if self._auth and self._auth.startswith("Basic"):
            return False  # already tried
        scheme, params = _auth_challenge(header)
        if scheme == "basic":
            if not self.username:
                raise ArtifactError(f"registry {self.base} wants credentials (registry_username/registry_password)")
            self._auth = self._basic()
            return True
        if scheme == "bearer" and params.get("realm"):
            if self._auth and self._auth.startswith("Bearer"):
                return False
            query = dict((k, v) for k, v in params.items() if k in ("service", "scope"))
            url = params["realm"] + ("?" + urlencode(query) if query else "")
            headers = {"Authorization": self._basic()} if self.username else {}
            try:
                resp = self._call(url, headers)
                data = json.loads(resp.read())
            except (TimeoutError, HTTPError, URLError, ValueError) as exc:
                raise ArtifactError("registry token from {} failed: {}".format(params["realm"], exc)) from exc
            token = data.get("token") or data.get("access_token")
            if not token:
                raise ArtifactError("registry token endpoint {} returned no token".format(params["realm"]))
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
        media = data.get("mediaType") or resp.headers.get("Content-Type", "").split(";")[0]
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
        """Download a blob into ``path`` and verify it against its digest."""
        algo, dummy, expected = digest.partition(":")
        if algo != "sha256" or not _SHA256.match(expected):
            raise ArtifactError(f"unsupported blob digest {digest!r}")
        resp = self.get(f"/v2/{repository}/blobs/{digest}")
        length = resp.headers.get("Content-Length")
        if space_check is not None and length and length.isdigit():
            space_check(int(length))
        hasher = hashlib.sha256()
        throttle = Throttle(self.rate_limit)
        with open(path, "wb") as out:
            while True:
                block = resp.read(CHUNK)
                if not block:
                    break
                hasher.update(block)
                out.write(block)
                throttle.take(len(block))
        if hasher.hexdigest() != expected:
            os.unlink(path)
            raise ArtifactError(f"blob {digest} of {repository} failed verification (got sha256:{hasher.hexdigest()})")
        return os.path.getsize(path)
