# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the edgeai.fleet collection: not a public API, may change without notice.
"""The engine of edgeai.fleet.model_artifact: fetch a model's files (https URL with
resumable download, a path on the device, or an OCI image in a registry), verify them,
unpack them safely and stage them atomically as ``<dest>/<model>/<version>/``."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from urllib.parse import urlparse

from ansible.module_utils.urls import open_url
from ansible_collections.edgeai.fleet.plugins.module_utils._archive import (
    DEFAULT_MAX_MEMBERS,
    DEFAULT_MAX_UNPACKED_MB,
    Limits,
    check_tree_links,
    copy_tree_checked,
    detect_format,
    extract_tar,
    extract_zip,
    sha256_file,
    tree_digest,
    tree_listing,
)
from ansible_collections.edgeai.fleet.plugins.module_utils._download import (
    Downloader,
    check_credentials,
    shown_url,
    url_credentials,
)
from ansible_collections.edgeai.fleet.plugins.module_utils._errors import ArtifactError, EdgeAIError
from ansible_collections.edgeai.fleet.plugins.module_utils._events import EVENTS_ARGS, EventPoster
from ansible_collections.edgeai.fleet.plugins.module_utils._http import redact_url as _redact
from ansible_collections.edgeai.fleet.plugins.module_utils._layout import CONFIG, MANIFEST, SMOKE, staged_versions
from ansible_collections.edgeai.fleet.plugins.module_utils._oci_registry import RegistryClient, parse_image_ref

_SHA256 = re.compile(r"^[0-9a-f]{64}$")

ARGUMENT_SPEC = dict(
    name=dict(type="str", required=True),
    version=dict(type="int", required=True),
    dest=dict(type="path", default="/var/lib/edgeai/artifacts"),
    # no_log: a presigned URL or one with user:pass@ is a credential; results show it redacted
    url=dict(type="str", no_log=True),
    sha256=dict(type="str"),
    headers=dict(type="dict", default={}, no_log=True),
    url_token=dict(type="str", no_log=True),
    allow_insecure_credentials=dict(type="bool", default=False),
    registry_auth_hosts=dict(type="list", elements="str", default=[]),
    src=dict(type="path"),
    image=dict(type="str"),
    image_path=dict(type="str"),
    registry_username=dict(type="str"),
    registry_password=dict(type="str", no_log=True),
    format=dict(type="str", default="auto", choices=["auto", "tar", "zip", "file"]),
    filename=dict(type="str"),
    subdir=dict(type="str"),
    keep_versions=dict(type="int", default=3),
    protect_versions=dict(type="list", elements="int", default=[]),
    min_free_space_mb=dict(type="int", default=100),
    validate_certs=dict(type="bool", default=True),
    ca_path=dict(type="path"),
    timeout=dict(type="float", default=60.0),
    retries=dict(type="int", default=3),
    rate_limit=dict(type="int", default=0),
    require_staged=dict(type="bool", default=False),
    url_username=dict(type="str"),
    url_password=dict(type="str", no_log=True),
    max_unpacked_mb=dict(type="int", default=DEFAULT_MAX_UNPACKED_MB),
    max_members=dict(type="int", default=DEFAULT_MAX_MEMBERS),
    events=EVENTS_ARGS,
)
MUTUALLY_EXCLUSIVE = [("url", "src", "image"), ("url_token", "url_username")]
REQUIRED_ONE_OF = [("url", "src", "image")]
REQUIRED_TOGETHER = [("registry_username", "registry_password"), ("url_username", "url_password")]
REQUIRED_BY = {"url": ("sha256",)}


# -- free space ------------------------------------------------------------------------
def free_bytes(path):
    """Bytes available to unprivileged users on the filesystem holding ``path`` (the
    nearest existing parent is measured when ``path`` does not exist yet)."""
    path = os.path.abspath(path)
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def ensure_space(path, needed, margin, what="the artifact", statvfs_free=free_bytes):
    free = statvfs_free(path)
    if needed + margin > free:
        raise ArtifactError(
            f"not enough free space in {path} for {what}: need {needed} bytes plus a margin of {margin}, "
            f"{free} free",
            needed_bytes=needed, free_bytes=free)
    return free


# -- staging ---------------------------------------------------------------------------
def read_manifest(version_dir):
    try:
        with open(os.path.join(version_dir, MANIFEST), encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def version_content(root, version):
    """Where the version's files are inside an unpacked artifact, and its config.pbtxt.

    A Triton model directory (``config.pbtxt`` plus numbered version folders) gives the
    folder of ``version`` (or the only one); anything else is the version's files.
    A single folder wrapping everything (``scale/config.pbtxt``...) is looked into."""
    entries = os.listdir(root)
    while len(entries) == 1 and not entries[0].isdigit() and os.path.isdir(os.path.join(root, entries[0])) \
            and not os.path.islink(os.path.join(root, entries[0])):
        root = os.path.join(root, entries[0])
        entries = os.listdir(root)
    numbered = sorted(n for n in os.listdir(root) if n.isdigit() and os.path.isdir(os.path.join(root, n))
                      and not os.path.islink(os.path.join(root, n)))
    config = os.path.join(root, CONFIG)
    if numbered:
        if str(version) in numbered:
            chosen = str(version)
        elif len(numbered) == 1:
            chosen = numbered[0]
        else:
            raise ArtifactError("the artifact holds versions {} but not {}".format(", ".join(numbered), version))
        return os.path.join(root, chosen), config if os.path.isfile(config) else None
    return root, None


def _describe(listing):
    return "".join("{} {}\n".format(value[:12] if kind == "file" else "-> " + value, rel)
                   for rel, kind, value, dummy in listing)


class ModelArtifact:
    """Stage one version of a model from its source. ``params`` are the module's."""

    def __init__(self, params, check_mode=False, opener=open_url, statvfs_free=free_bytes,
                 registry_scheme="https"):
        self.p = params
        self.check_mode = check_mode
        self._open = opener
        self._free = statvfs_free
        self._registry_scheme = registry_scheme
        self.margin = max(0, params.get("min_free_space_mb", 100)) * 1024 * 1024
        self.model_dir = os.path.join(params["dest"], params["name"])
        self.target = os.path.join(self.model_dir, str(params["version"]))
        self.result = {"changed": False, "path": self.target, "version": params["version"]}

    # -- helpers -----------------------------------------------------------------------
    def _space(self, what):
        def check(needed):
            ensure_space(self.p["dest"], needed, self.margin, what, self._free)
        return check

    def _validate(self):
        p = self.p
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", p["name"]) or p["name"] in (".", ".."):
            raise ArtifactError("name {!r} is not a valid model name".format(p["name"]))
        if p["version"] < 1:
            raise ArtifactError("version must be a positive integer")
        if p["keep_versions"] < 1:
            raise ArtifactError("keep_versions must be at least 1")
        for cap in ("max_unpacked_mb", "max_members"):
            if p.get(cap) is not None and p[cap] < 1:
                raise ArtifactError(f"{cap} must be at least 1 (raise it for a bigger model; there is no 'unlimited')")
        if p.get("sha256"):
            p["sha256"] = p["sha256"].lower().replace("sha256:", "")
            if not _SHA256.match(p["sha256"]):
                raise ArtifactError("sha256 must be 64 hexadecimal characters")
        if p.get("url"):
            scheme = urlparse(p["url"]).scheme
            if scheme not in ("https", "http"):
                raise ArtifactError("url must be https:// (or http:// where sha256 is the only protection)")
            if not p.get("sha256"):
                raise ArtifactError("sha256 is required with url")
            # refused here too, so that check mode says so before anything would be sent
            check_credentials(p["url"], url_credentials(p), p.get("allow_insecure_credentials", False))

    def _source(self):
        """(kind, id) of the source: cheap to compute, equal when bytes are equal."""
        p = self.p
        if p.get("url"):
            return "url", "sha256:" + p["sha256"]
        if p.get("src"):
            src = p["src"]
            if not os.path.exists(src):
                raise ArtifactError(f"src {src} does not exist on the device (copy it there first)")
            if os.path.isdir(src):
                digest = tree_digest(src)
                if p.get("sha256") and digest != p["sha256"]:
                    raise ArtifactError(
                        "sha256 mismatch for the directory {}: for a directory, sha256 is checked against its tree "
                        "digest (names, contents and exec bits; the source_id tree:<hex> a run reports), expected {}, "
                        "got {}; give that digest, or leave sha256 out".format(src, p["sha256"], digest),
                        expected_sha256=p["sha256"], actual_sha256=digest)
                return "src", "tree:" + digest
            actual = sha256_file(src)
            if p.get("sha256") and actual != p["sha256"]:
                raise ArtifactError("sha256 mismatch for {}: expected {}, got {}".format(src, p["sha256"], actual),
                                    expected_sha256=p["sha256"], actual_sha256=actual)
            return "src", "sha256:" + actual
        registry, repository, reference = parse_image_ref(p["image"])
        self._registry = RegistryClient(registry, p.get("registry_username"), p.get("registry_password"),
                                        p["validate_certs"], p.get("ca_path"), p["timeout"],
                                        scheme=self._registry_scheme, opener=self._open,
                                        rate_limit=p["rate_limit"], retries=p.get("retries", 3),
                                        allow_insecure_credentials=p.get("allow_insecure_credentials", False),
                                        auth_hosts=p.get("registry_auth_hosts") or ())
        self._repository = repository
        digest, manifest = self._registry.image_manifest(repository, reference)
        self._image_manifest = manifest
        return "image", digest

    def _fetch(self, work):
        """Bring the source's bytes into ``work``; return (path, format, downloaded bytes, resumed)."""
        p = self.p
        if p.get("url"):
            downloads = os.path.join(p["dest"], ".downloads")
            os.makedirs(downloads, mode=0o700, exist_ok=True)
            part = os.path.join(downloads, p["sha256"] + ".part")
            loader = Downloader(url_credentials(p), p["validate_certs"], p.get("ca_path"), p["timeout"],
                                p["retries"], opener=self._open, rate_limit=p["rate_limit"],
                                allow_insecure_credentials=p.get("allow_insecure_credentials", False))
            info = loader.fetch(p["url"], part, p["sha256"], self._space("the download"))
            self._cleanup.append(part)
            return part, p["format"], info["bytes"], info["resumed"]
        if p.get("src"):
            return p["src"], p["format"], 0, False
        layers_dir = os.path.join(work, "layers")
        root = os.path.join(work, "image")
        os.makedirs(layers_dir)
        os.makedirs(root)
        strip = (p.get("image_path") or "/models/{}".format(p["name"])).strip("/")
        total = 0
        limits = self._limits()  # for the whole image: the layers together
        for index, layer in enumerate(self._image_manifest.get("layers", [])):
            blob = os.path.join(layers_dir, str(index))
            total += self._registry.blob(self._repository, layer["digest"], blob, self._space("an image layer"))
            # Applied in order; each one is written without following links and leaves no
            # link of the tree resolving outside it, or the image is refused.
            extract_tar(blob, root, strip=strip, whiteouts=True, limits=limits,
                        space_check=self._space("an image layer"),
                        label="layer {} ({}) of {}".format(index + 1, layer.get("digest"), p["image"]))
            os.unlink(blob)
        if not os.listdir(root):
            raise ArtifactError("image {} has nothing under {}".format(p["image"], "/" + strip))
        return root, "dir", total, False

    def _limits(self):
        return Limits.from_mb(self.p.get("max_unpacked_mb", DEFAULT_MAX_UNPACKED_MB),
                              self.p.get("max_members", DEFAULT_MAX_MEMBERS))

    def _unpack(self, path, fmt, out):
        p = self.p
        if fmt == "dir" or os.path.isdir(path):
            if path != out:
                copy_tree_checked(path, out)
                if p.get("sha256") and tree_digest(out) != p["sha256"]:
                    raise ArtifactError(f"the directory {path} changed while it was copied (its tree digest no longer "
                                        "matches sha256); run again")
            return
        if fmt == "auto":
            fmt = detect_format(path)
        strip = (p.get("subdir") or "").strip("/")
        # the space check runs on the sizes the archive declares, before anything is written;
        # the caps count the bytes as they are written
        space = self._space("the unpacked model")
        if fmt == "tar":
            extract_tar(path, out, strip=strip, limits=self._limits(), space_check=space)
        elif fmt == "zip":
            extract_zip(path, out, strip=strip, limits=self._limits(), space_check=space)
        else:
            name = p.get("filename") or os.path.basename(urlparse(p.get("url") or path).path)
            if not name or name in (".", "..") or "/" in name:
                raise ArtifactError("give filename for the single-file artifact")
            shutil.copyfile(path, os.path.join(out, name))
            os.chmod(os.path.join(out, name), 0o644)
        if not os.listdir(out):
            raise ArtifactError("the artifact is empty%s" % (f" under {strip}" if strip else ""))

    def _prune(self):
        versions = staged_versions(self.model_dir)
        keep = self.p["keep_versions"]
        # The version being staged and the protected ones (the version the server serves now,
        # which a rollback returns to) never go, whatever their numbers.
        protected = {self.p["version"], *(self.p.get("protect_versions") or [])}
        others = [v for v in versions if v not in protected]
        excess = len(versions) - keep
        removed = sorted(others)[:max(0, excess)]
        if removed and not self.check_mode:
            for version in removed:
                shutil.rmtree(os.path.join(self.model_dir, str(version)))
        self.result["removed_versions"] = removed
        self.result["kept_versions"] = [v for v in versions if v not in removed]
        return bool(removed)

    # -- the run -----------------------------------------------------------------------
    def run(self):
        self._validate()
        p = self.p
        kind, source_id = self._source()
        existing = read_manifest(self.target) if os.path.isdir(self.target) else None
        before = None
        if existing is not None:
            before = existing
            on_disk = tree_digest(self.target, exclude=(MANIFEST,))
            if existing.get("source_id") == source_id and existing.get("digest") == on_disk:
                self.result.update(self._summary(existing, downloaded=0, resumed=False))
                self.result["changed"] = self._prune()
                return self.result
        self.result["source"] = kind
        if p["require_staged"]:
            raise ArtifactError(
                "{} version {} is not staged on this device from {} {} (require_staged: the switch moves no "
                "bytes); stage it first".format(p["name"], p["version"], kind, source_id),
                staged=False)
        if self.check_mode:
            self.result["changed"] = True
            self.result["sha256"] = source_id.split(":", 1)[1] if source_id.startswith("sha256:") else None
            self.result["source_id"] = source_id
            self.result["diff"] = {"before": _describe_manifest(before),
                                   "after": f"{kind} {source_id} (not fetched in check mode)\n"}
            self._prune()
            return self.result
        os.makedirs(self.model_dir, mode=0o755, exist_ok=True)
        self._cleanup = []
        work = tempfile.mkdtemp(prefix=".tmp-{}-".format(p["version"]), dir=self.model_dir)
        try:
            path, fmt, downloaded, resumed = self._fetch(work)
            unpacked = os.path.join(work, "unpacked")
            if fmt == "dir" and path.startswith(work):
                unpacked = path
            else:
                os.makedirs(unpacked)
                self._unpack(path, fmt, unpacked)
            content, config = version_content(unpacked, p["version"])
            staged = os.path.join(work, "staged")
            if content == unpacked and config is None:
                os.rename(unpacked, staged)
            else:
                os.rename(content, staged)
                if config:
                    target = os.path.join(staged, CONFIG)
                    if os.path.lexists(target) and not os.path.isdir(target):
                        os.unlink(target)  # never write through a link the artifact put there
                    shutil.copyfile(config, target, follow_symlinks=True)
                # the release builder's smoke test lies next to config.pbtxt, and goes with it
                smoke = os.path.join(os.path.dirname(config) if config else os.path.dirname(content), SMOKE)
                if os.path.isfile(smoke) and not os.path.islink(smoke):
                    target = os.path.join(staged, SMOKE)
                    if os.path.lexists(target) and not os.path.isdir(target):
                        os.unlink(target)
                    shutil.copyfile(smoke, target)
            os.chmod(staged, 0o755)
            # the version's folder alone must hold: a link that climbed out of it into the
            # rest of the artifact would point outside once staged
            check_tree_links(staged, "link", "the version's folder")
            listing = tree_listing(staged)
            digest = tree_digest(staged)
            manifest = {
                "model": p["name"], "version": p["version"], "source": kind, "source_id": source_id,
                "origin": _redact(p.get("url") or "") or p.get("src") or p.get("image"),
                "digest": digest, "files": [e[0] for e in listing],
                "config": os.path.exists(os.path.join(staged, CONFIG)),
                "staged_at": int(time.time()),
            }
            changed = not (existing and existing.get("digest") == digest
                           and tree_digest(self.target, exclude=(MANIFEST,)) == digest)
            if changed:
                with open(os.path.join(staged, MANIFEST), "w", encoding="utf-8") as handle:
                    json.dump(manifest, handle, indent=1, sort_keys=True)
                self._swap(staged, work)
                self.result["diff"] = {"before": _describe_manifest(before),
                                       "after": _describe_manifest(manifest, listing)}
            else:
                manifest = existing
            self.result.update(self._summary(manifest, downloaded, resumed))
            self.result["changed"] = changed
        finally:
            shutil.rmtree(work, ignore_errors=True)
            for leftover in self._cleanup:
                if os.path.exists(leftover):
                    os.unlink(leftover)
            # leave no empty folders behind a failed first run ("nothing changed")
            for folder in (os.path.join(p["dest"], ".downloads"), self.model_dir):
                try:
                    os.rmdir(folder)
                except OSError:
                    pass
        if self._prune():
            self.result["changed"] = True
        return self.result

    def _swap(self, staged, work):
        """Put ``staged`` at the version's path with renames (same filesystem)."""
        old = None
        if os.path.lexists(self.target):
            old = os.path.join(work, "previous")
            os.rename(self.target, old)
        try:
            os.rename(staged, self.target)
        except OSError:
            if old:
                os.rename(old, self.target)
            raise

    def _summary(self, manifest, downloaded, resumed):
        return {
            "source": manifest.get("source"),
            "source_id": manifest.get("source_id"),
            "sha256": _sha256_of(manifest.get("source_id")),
            "digest": manifest.get("digest"),
            "files": manifest.get("files", []),
            "config": bool(manifest.get("config")),
            "downloaded_bytes": downloaded,
            "resumed": resumed,
        }


def _sha256_of(source_id):
    source_id = str(source_id or "")
    return source_id.split(":", 1)[1] if source_id.startswith("sha256:") else None


def _describe_manifest(manifest, listing=None):
    if not manifest:
        return ""
    head = "version {} from {} {}\n".format(manifest.get("version"), manifest.get("source"), manifest.get("source_id"))
    if listing is not None:
        return head + _describe(listing)
    return head + "".join(f"{f}\n" for f in manifest.get("files", []))


def run_module(module_cls):
    """Entry point used by plugins/modules/model_artifact.py."""
    module = module_cls(argument_spec=ARGUMENT_SPEC, mutually_exclusive=MUTUALLY_EXCLUSIVE,
                        required_one_of=REQUIRED_ONE_OF, required_together=REQUIRED_TOGETHER,
                        required_by=REQUIRED_BY, supports_check_mode=True)
    url = shown_url(module)  # the redacted url, for the result and failures
    # Within a rollout (events set), a staging failure is the deployment's failure: say so.
    events = EventPoster(module.params.get("events"), module.params["name"], module.params["version"])
    try:
        result = ModelArtifact(module.params, check_mode=module.check_mode).run()
    except EdgeAIError as exc:
        if not module.check_mode:
            events.post("deploy_failed", previous_version=(module.params["protect_versions"] or [None])[0],
                        reason=f"staging failed: {exc.msg}")
        details = dict(exc.details)
        if url:
            details.setdefault("url", url)
        module.fail_json(msg=exc.msg, events_undelivered=events.undelivered, events_errors=events.errors, **details)
    except OSError as exc:
        if not module.check_mode:
            events.post("deploy_failed", previous_version=(module.params["protect_versions"] or [None])[0],
                        reason=f"staging failed: {exc}")
        module.fail_json(msg=f"model_artifact failed: {exc}", events_undelivered=events.undelivered,
                         events_errors=events.errors)
    if url:
        result["url"] = url
    module.exit_json(**result)
