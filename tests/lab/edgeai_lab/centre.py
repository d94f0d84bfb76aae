"""The lab's centre (its registry and artifact store), seen from tests and benchmarks.

Objects of one's own there (an image of random layers, a file of random bytes), what the centre's
JSON logs say it served to a site (the lab gateway relays site n's connections from 127.213.n.1),
an inventory of sites whose first device runs a site cache (roles/site_cache) for the others, and the
playbooks (PLAYBOOKS) that set up those caches and fetch through them as the roles do.
tests/integration/test_site_cache.py and benchmarks/site_bandwidth both use these.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import secrets
import ssl
import tempfile
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeai_lab import access, core, services
from edgeai_lab import inventory as lab_inventory

CA = "{{ lookup('ansible.builtin.file', edge_lab_ca_cert) }}"
# caches.yml (engines and caches), pull.yml, stage.yml and fetch.yml (both): each file says its extra vars
PLAYBOOKS = Path(__file__).resolve().parents[1] / "playbooks" / "site_cache"
# the lab's site.yml reads the centre's logins from the lab's 0600 files
LOGINS = {"registry": "_edge_lab_registry_login.edge_lab_registry",
          "artifact": "_edge_lab_artifacts_login.edge_lab_artifacts"}


@dataclass(frozen=True)
class Response:
    """One answer of the centre from its log: the service ("registry" or "artifacts"), the request's method
    and path, the bytes sent and (artifact store) the Range asked for."""

    service: str
    method: str
    path: str
    bytes: int
    range: str | None = None


def read_json_lines(path: Path, offset: int) -> list[dict[str, Any]]:
    """The JSON lines of a log from byte `offset` on; a line still being written is left out."""
    with path.open("rb") as fh:
        fh.seek(offset)
        lines = fh.read().decode(errors="replace").splitlines()
    out = []
    for line in (line for line in lines if line.startswith("{")):
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out


def object_gets(responses: Iterable[Response], blobs: Iterable[str] = (),
                artifact: str | None = None) -> list[Response]:
    """The GETs among `responses` of these registry blobs (digests) or of this artifact-store file (its name)."""
    blobs = set(blobs)
    return [r for r in responses if r.method == "GET" and (
        (r.service == "registry" and "/blobs/" in r.path and r.path.rsplit("/", 1)[-1] in blobs)
        or (r.service == "artifacts" and artifact is not None and r.path == "/" + artifact))]


def site_source(status: dict[str, Any], device: str) -> str:
    """The address the centre sees the relayed connections of `device`'s site come from (127.213.<n>.1)."""
    return "127.213.{}.1".format(status["devices"][device]["address"].split(".")[2])


def lookup(path: Path | str) -> str:
    """The Jinja expression reading a controller file (a secret stays in its file, out of the inventory)."""
    return f"{{{{ lookup('ansible.builtin.file', '{path}') }}}}"


class Centre:
    """The central registry and artifact store of the lab `status` (`lab status --json`). It remembers what
    it put there: clean() removes it."""

    def __init__(self, status: dict[str, Any]) -> None:
        self.status = status
        self.creds = json.loads(Path(status["registry"]["credentials_file"]).read_text())
        self.context = ssl.create_default_context(cafile=status["ca_cert"])
        self.logs = {"registry": Path(status["state_dir"]) / "logs" / "registry.log",
                     "artifacts": Path(status["artifacts"]["log"])}
        self.images: list[str] = []  # central names, their manifests deleted by clean()
        self.files: list[Path] = []

    def registry(self, path: str, method: str = "GET") -> tuple[Any, bytes]:
        """A request to the registry (HTTPS, Basic auth, the lab CA): the answer's headers and body."""
        req = urllib.request.Request(f"https://{self.status['registry']['host_address']}{path}", method=method)
        login = f"{self.creds['username']}:{self.creds['password']}".encode()
        req.add_header("Authorization", "Basic " + base64.b64encode(login).decode())
        req.add_header("Accept", "application/vnd.docker.distribution.manifest.v2+json")
        with urllib.request.urlopen(req, timeout=30, context=self.context) as resp:
            return resp.headers, resp.read()

    def push_image(self, repo: str, layers: Iterable[int]) -> str:
        """An image of random layers (their sizes in bytes) FROM scratch, built and pushed to the centre as
        repo:1 as the lab pushes its own images; its central name."""
        with tempfile.TemporaryDirectory(prefix="edgeai-lab-image-") as context:
            copies = []
            for i, size in enumerate(layers):
                Path(context, f"layer{i}.bin").write_bytes(os.urandom(size))
                copies.append(f"COPY layer{i}.bin /models/layer{i}.bin\n")
            Path(context, "Dockerfile").write_text("FROM scratch\n" + "".join(copies))
            core.docker("build", "-q", "-t", repo, context, timeout=300)
        ref = f"{self.status['registry']['host']}/{repo}:1"
        self.images.append(ref)
        try:
            services.push_image(repo, repo, ["1"], self.creds)
        finally:
            core.docker("rmi", repo, check=False)
        return ref

    @staticmethod
    def _repo(ref: str) -> str:
        return ref.split("/", 1)[1].rsplit(":", 1)[0]

    def blobs(self, ref: str) -> dict[str, int]:
        """digest -> size of the config and every layer of the pushed image `ref`."""
        manifest = json.loads(self.registry(f"/v2/{self._repo(ref)}/manifests/1")[1])
        return {b["digest"]: b["size"] for b in [manifest["config"], *manifest["layers"]]}

    def delete_image(self, ref: str) -> None:
        """Remove the pushed image's manifest from the centre (its blobs go with the registry's next GC)."""
        headers, _body = self.registry(f"/v2/{self._repo(ref)}/manifests/1", method="HEAD")
        self.registry(f"/v2/{self._repo(ref)}/manifests/{headers['Docker-Content-Digest']}", method="DELETE")

    def put_artifact(self, name: str, size: int) -> tuple[str, str]:
        """A file of `size` random bytes in the artifact store: its URL (as devices reach it) and sha256."""
        payload = os.urandom(size)
        path = Path(self.status["artifacts"]["root"]) / name
        self.files.append(path)
        path.write_bytes(payload)
        return f"{self.status['artifacts']['url']}/{name}", hashlib.sha256(payload).hexdigest()

    def offsets(self) -> dict[str, int]:
        """Where the registry's and the artifact store's logs end now: served() reads from there."""
        return {service: path.stat().st_size for service, path in self.logs.items()}

    def served(self, offsets: dict[str, int], source: str) -> list[Response]:
        """What the centre answered to a site's source address (site_source()) since `offsets`."""
        out = [Response("registry", r.get("http.request.method", ""), r.get("http.request.uri", ""),
                        int(r.get("http.response.written", 0)))
               for r in read_json_lines(self.logs["registry"], offsets["registry"])
               if r.get("msg") == "response completed"
               and r.get("http.request.remoteaddr", "").rsplit(":", 1)[0] == source]
        return out + [Response("artifacts", r.get("method", ""), r.get("path", ""), int(r.get("bytes") or 0),
                               r.get("range"))
                      for r in read_json_lines(self.logs["artifacts"], offsets["artifacts"])
                      if r.get("client") == source]

    def clean(self, log: Callable[[str], None] = print) -> None:
        """Delete the images pushed and the files put; what cannot be deleted is logged, not raised."""
        while self.images:
            ref = self.images.pop()
            try:
                self.delete_image(ref)
            except OSError as exc:
                log(f"could not delete {ref} from the registry: {exc}")
        while self.files:
            self.files.pop().unlink(missing_ok=True)


def site_cache_inventory(path: Path, status: dict[str, Any], sites: dict[str, list[str]], *, cache: bool = True,
                         parent: str | None = None) -> Path:
    """A YAML inventory at `path` (access.static_inventory: the lab's vars and group_vars) of `sites` (name ->
    its devices), each a group named after it (`-` as `_`) under `parent` if given. The first device of each
    site runs its cache: group site_cache_hosts, with the lab's certificate of the device, the centre's
    logins upstream and the devices' login, whose password is in `<site>-device-password` beside `path`
    (made once). cache=True gives each site the `edgeai_site_cache` vars so that its devices use it."""
    pki = Path(status["state_dir"]) / "pki"
    groups: dict[str, Any] = {}
    caches: dict[str, Any] = {}
    for site, names in sites.items():
        host, address = names[0], status["devices"][names[0]]["address"]
        password = path.parent / f"{site}-device-password"
        if not password.exists():
            core.write_private(password, secrets.token_urlsafe(18) + "\n")
        hosts = {d: {"ansible_host": "127.0.0.1", "ansible_port": status["devices"][d]["port"], "edge_site": site}
                 | lab_inventory.device_vars(d, status["devices"][d]) for d in names}
        groups[site.replace("-", "_")] = {"hosts": hosts}
        if cache:  # what an operator puts in the site's group_vars
            groups[site.replace("-", "_")]["vars"] = {"edgeai_site_cache": {
                "host": address, "ca": CA, "username": "device", "password": lookup(password)}}
        gateway = re.sub(r"\.\d+$", ".1", address)
        caches[host] = {
            # the lab's per-device certificate (from the lab CA) names the device's site address
            "site_cache_tls_cert": lookup(pki / f"device-{host}.crt"),
            "site_cache_tls_key": lookup(pki / f"device-{host}.key"),
            "site_cache_users": [{"username": "device", "password": lookup(password)}],
            # inside the cache container the lab's names are not in /etc/hosts
            "site_cache_etc_hosts": {core.REGISTRY_HOST: gateway, core.ARTIFACTS_HOST: gateway}}
    upstream = {f"site_cache_upstream_{k}_{f}": f"{{{{ {v}_{f} }}}}" for k, v in LOGINS.items()
                for f in ("username", "password")}
    tree = {"vars": {"site_cache_upstream_registry": "{{ edge_lab_registry }}",
                     "site_cache_upstream_artifact_url": "{{ edge_lab_artifacts_url }}/"},
            "children": {**({parent: {"children": groups}} if parent else groups), "site_cache_hosts": {
                "hosts": caches, "vars": {"site_cache_image": status["images"]["site-cache"]["ref"],
                                          "site_cache_upstream_ca": CA, **upstream}}}}
    return access.static_inventory(path.parent, path.name, tree)
