# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the edgeai.fleet collection: not a public API, may change without notice.
"""Publish the artifacts where devices fetch them, on the collection's one HTTP layer
(plugins/module_utils/_http.py: TLS with a CA file, retries, redaction, credentials only over
https or to loopback and never along a redirect to another host).

- ``https``: ``PUT <url>/<file>`` with basic auth or a bearer token; the release then names the
  file by ``url`` (``release_url`` when devices read it elsewhere, e.g. through a CDN or a
  template such as ``{{ edge_artifacts_url }}``). A file already there with the same bytes
  (HEAD, then GET and sha256) is left alone.
- ``oci``: an OCI image in a registry (distribution API v2, basic auth or bearer tokens from the
  registry's own realm, as plugins/module_utils/_oci_registry.py pulls them): one gzip layer
  holding ``models/<name>/...`` (what edgeai.fleet.model_artifact takes by default,
  ``image_path: /models/<name>``), an OCI image config, and an OCI image manifest, tagged
  ``<version>-<artifact key>``; the release pins it by digest (``image: registry/repo@sha256:...``).
  Blobs the registry already has are not uploaded again; an unchanged manifest is not pushed."""

from __future__ import annotations

import hashlib
import json
import os
from urllib.parse import quote, urljoin

from ansible.module_utils.urls import open_url
from ansible_collections.edgeai.fleet.plugins.module_utils._errors import ArtifactError, EdgeAIError, HTTPError
from ansible_collections.edgeai.fleet.plugins.module_utils._http import (
    Client,
    RetryPolicy,
    basic_auth,
    origin,
    redact_url,
)
from ansible_collections.edgeai.fleet.plugins.module_utils._oci_registry import (
    CREDENTIALS,
    RegistryClient,
    _auth_challenge,
)
from ansible_collections.edgeai.fleet.plugins.plugin_utils._release_build._common import BuildError

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
PUBLISH_TYPES = ("https", "oci")


class PublishError(BuildError, HTTPError):
    """Publishing an artifact failed."""


def _credentials(settings):
    if settings.get("token"):
        return {"Authorization": "Bearer " + str(settings["token"])}
    if settings.get("username"):
        return {"Authorization": basic_auth(settings["username"], settings.get("password") or "")}
    return {}


def _client(settings, what, opener):
    secrets = [settings.get("password"), settings.get("token")]
    return Client(timeout=float(settings.get("timeout") or 120), validate_certs=settings.get("validate_certs", True),
                  ca_path=settings.get("ca_path"), retry=RetryPolicy(int(settings.get("retries", 3)), 1.0),
                  opener=opener, error=PublishError, what=what, secrets=[s for s in secrets if s])


def check_settings(settings):
    """Validate the ``publish`` mapping; return it normalised."""
    if not isinstance(settings, dict):
        raise BuildError("publish must be a mapping with type (https or oci) and where to publish")
    kind = settings.get("type")
    if kind not in PUBLISH_TYPES:
        raise BuildError(f"publish.type must be one of {', '.join(PUBLISH_TYPES)}, got {kind!r}")
    out = dict(settings)
    if kind == "https":
        url = str(out.get("url") or "")
        if origin(url)[0] != "https" and not out.get("allow_http"):
            raise BuildError(f"publish.url must be an https URL (the artifact store), got {redact_url(url)!r}")
    else:
        if not out.get("registry") or "/" in str(out["registry"]):
            raise BuildError("publish.registry must be the registry's host[:port] (registry.example.com:5000)")
        if not out.get("repository"):
            raise BuildError("publish.repository must name the repository (models/<name>)")
    if out.get("token") and out.get("username"):
        raise BuildError("publish: give username/password or token, not both")
    return out


# -- https -----------------------------------------------------------------------------------
def publish_https(path, filename, sha256, settings, check_mode=False, opener=open_url):
    """PUT ``path`` at ``<url>/<filename>``; return (release URL, changed)."""
    base = str(settings["url"])
    url = base + filename if base.endswith("/") else base.rstrip("/") + "/" + filename
    release_url = settings.get("release_url")
    release_url = (release_url + filename if str(release_url).endswith("/") else release_url) if release_url else url
    client = _client(settings, "the artifact store", opener)
    credentials = _credentials(settings)
    head = client.request("HEAD", url, credentials=credentials, what_credentials="publish.username/password")
    size = os.path.getsize(path)
    if head.status == 200 and head.header("Content-Length") == str(size):
        got = client.request("GET", url, credentials=credentials, stream=True, ok=(200,),
                             what_credentials="publish.username/password")
        digest = hashlib.sha256()
        try:
            for block in iter(lambda: got.raw.read(1 << 20), b""):
                digest.update(block)
        finally:
            got.close()
        if digest.hexdigest() == sha256:
            return release_url, False
    if check_mode:
        return release_url, True
    with open(path, "rb") as handle:
        data = handle.read()
    client.request("PUT", url, data=data, credentials=credentials, ok=(200, 201, 204),
                   headers={"Content-Type": "application/gzip"}, what_credentials="publish.username/password")
    return release_url, True


# -- OCI -------------------------------------------------------------------------------------
class RegistryPusher(RegistryClient):
    """The collection's registry client (auth, TLS, redaction) with the calls a push needs."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._scopes = set()

    def _authenticate(self, header):
        # A token is issued per scope: the pull token of a HEAD does not allow the push that
        # follows, so a challenge for a scope not asked for yet gets a new token (once).
        scheme, params = _auth_challenge(header)
        if scheme == "bearer":
            scope = params.get("scope", "")
            if scope in self._scopes and self._auth:
                return False
            self._scopes.add(scope)
            if self._auth and self._auth.startswith("Bearer"):
                self._auth = None
        return super()._authenticate(header)

    def send(self, method, target, data=None, headers=None, ok=None):
        url = target if "://" in target else self.base + target
        if origin(url) != origin(self.base):
            raise PublishError(f"registry {self.registry} sent the upload to {redact_url(url)}, another host; refused, "
                               "nothing was sent there")
        for _dummy in range(2):
            credentials = {"Authorization": self._auth} if self._auth else {}
            resp = self.http.request(method, url, data=data, headers=headers, credentials=credentials,
                                     what_credentials=CREDENTIALS)
            if resp.status == 401 and self._authenticate(resp.header("WWW-Authenticate")):
                continue
            if ok is not None and resp.status not in ok:
                body = resp.read() if resp.raw is not None else b""
                detail = body.decode("utf-8", "replace")[:300].strip()
                raise self.http.fail(f"registry {self.base}: {method} {redact_url(url)}: HTTP {resp.status}"
                                     + (f": {detail}" if detail else ""), status=resp.status, url=url,
                                     error=PublishError)
            return resp
        raise PublishError(f"registry {self.base} refused the credentials for {method} {redact_url(url)}")

    def push_blob(self, repository, data, check_mode=False):
        """Upload ``data`` unless the registry has it; return (digest, uploaded)."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if self.send("HEAD", f"/v2/{repository}/blobs/{digest}").status == 200:
            return digest, False
        if check_mode:
            return digest, True
        start = self.send("POST", f"/v2/{repository}/blobs/uploads/", data=b"", ok=(202,))
        location = start.header("Location")
        if not location:
            raise PublishError(f"registry {self.base} gave no upload location for {repository}")
        url = urljoin(self.base + f"/v2/{repository}/blobs/uploads/", location)
        url += ("&" if "?" in url else "?") + "digest=" + quote(digest)
        self.send("PUT", url, data=data, headers={"Content-Type": "application/octet-stream"}, ok=(201,))
        return digest, True

    def push_manifest(self, repository, tag, raw, check_mode=False):
        """Tag ``raw`` unless the tag already points at it; return (digest, changed)."""
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        head = self.send("HEAD", f"/v2/{repository}/manifests/{tag}", headers={"Accept": MANIFEST_TYPE})
        if head.status == 200 and head.header("Docker-Content-Digest") == digest:
            return digest, False
        if check_mode:
            return digest, True
        put = self.send("PUT", f"/v2/{repository}/manifests/{tag}", data=raw,
                        headers={"Content-Type": MANIFEST_TYPE}, ok=(201,))
        answered = put.header("Docker-Content-Digest")
        if answered and answered != digest:
            raise PublishError(f"registry {self.base} stored the manifest of {repository}:{tag} as {answered}, not "
                               f"{digest}")
        return digest, True


def _diff_id(layer_path):
    import gzip

    digest = hashlib.sha256()
    with gzip.open(layer_path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def image_documents(layer_path, name, version, key, platform):
    """(layer bytes, config bytes, manifest bytes) of the model's image: the same inputs give
    the same digests (no timestamps)."""
    with open(layer_path, "rb") as handle:
        layer = handle.read()
    labels = {"org.opencontainers.image.title": name, "io.edgeai.model.name": name,
              "io.edgeai.model.version": str(version), "io.edgeai.model.artifact": key,
              "io.edgeai.model.platform": platform}
    # The layer is data only; edgeai.fleet.model_artifact takes a single-platform image on any
    # device (no architecture match), so the boards' arm64 is recorded for other tools.
    config = json.dumps({"architecture": "arm64", "os": "linux", "config": {"Labels": labels},
                         "rootfs": {"type": "layers", "diff_ids": [_diff_id(layer_path)]}},
                        sort_keys=True, separators=(",", ":")).encode()
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST_TYPE,
                "config": {"mediaType": CONFIG_TYPE, "digest": "sha256:" + hashlib.sha256(config).hexdigest(),
                           "size": len(config)},
                "layers": [{"mediaType": LAYER_TYPE, "digest": "sha256:" + hashlib.sha256(layer).hexdigest(),
                            "size": len(layer)}],
                "annotations": labels}
    return layer, config, json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()


def publish_oci(layer_path, name, version, key, platform, settings, check_mode=False, opener=open_url):
    """Push the image; return (``registry/repository@sha256:...``, changed)."""
    registry, repository = str(settings["registry"]), str(settings["repository"]).strip("/")
    template = str(settings.get("tag") or "{version}-{key}")
    tag = template.format(version=version, key=key, name=name, platform=platform)
    pusher = RegistryPusher(registry, settings.get("username"), settings.get("password"),
                            settings.get("validate_certs", True), settings.get("ca_path"),
                            float(settings.get("timeout") or 120), scheme=settings.get("scheme", "https"),
                            opener=opener, retries=int(settings.get("retries", 3)),
                            auth_hosts=settings.get("auth_hosts") or ())
    if settings.get("token"):
        pusher._auth = "Bearer " + str(settings["token"])
        pusher.http.secrets.add(str(settings["token"]))
    layer, config, manifest = image_documents(layer_path, name, version, key, platform)
    try:
        dummy, up_layer = pusher.push_blob(repository, layer, check_mode)
        dummy, up_config = pusher.push_blob(repository, config, check_mode)
        digest, tagged = pusher.push_manifest(repository, tag, manifest, check_mode)
    except PublishError:
        raise
    except (ArtifactError, HTTPError, EdgeAIError) as exc:
        raise PublishError(f"publishing {name} version {version} ({key}) to {registry}/{repository}: {exc.msg}",
                           **getattr(exc, "details", {})) from None
    return f"{registry}/{repository}@{digest}", bool(up_layer or up_config or tagged)
