# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""model_artifact's OCI source against a REAL registry: Debian's docker-registry
(distribution 2.8, the program the lab's registry runs) on a free loopback port, with TLS
from a test CA and htpasswd auth. Images are pushed through the registry HTTP API v2
(no Docker needed) and staged by the module run through `ansible`."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import pytest
import requests
import trustme
from edgeai_lab import loopback
from test_model_serving import run_module

USER, PASSWORD = "fleet", "registry-test-pw"


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    work = tmp_path_factory.mktemp("registry")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(work / "ca.pem"))
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE in the environment would override verify
    session.verify = str(work / "ca.pem")
    session.auth = (USER, PASSWORD)
    try:
        with loopback.registry(work, ca.issue_cert("127.0.0.1"), str(work / "ca.pem"), USER, PASSWORD) as served:
            assert session.get(f"https://{served['host']}/v2/", timeout=5).status_code == 200
            yield {"base": f"https://{served['host']}", "host": served["host"], "session": session,
                   "ca": str(work / "ca.pem")}
    except RuntimeError as exc:
        pytest.fail(str(exc))


def layer(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def push(registry, repo: str, tag: str, layers: list[bytes]) -> str:
    """Push an OCI image through the HTTP API v2; return its manifest digest."""
    session, base = registry["session"], registry["base"]

    def blob(data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        start = session.post(f"{base}/v2/{repo}/blobs/uploads/", timeout=10)
        assert start.status_code == 202, start.text
        location = start.headers["Location"]
        url = location if location.startswith("http") else base + location
        done = session.put(url, params={"digest": digest}, data=data,
                           headers={"Content-Type": "application/octet-stream"}, timeout=30)
        assert done.status_code == 201, done.text
        return digest

    layer_digests = [blob(data) for data in layers]
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": layer_digests}}).encode()
    manifest = {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blob(config),
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": len(data)}
                   for d, data in zip(layer_digests, layers, strict=True)],
    }
    raw = json.dumps(manifest).encode()
    put = session.put(f"{base}/v2/{repo}/manifests/{tag}", data=raw,
                      headers={"Content-Type": manifest["mediaType"]}, timeout=10)
    assert put.status_code == 201, put.text
    return "sha256:" + hashlib.sha256(raw).hexdigest()


CONFIG = b'name: "scale"\nbackend: "python"\n'


def stage(registry, tmp_path, tag: str, version: int, password: str = PASSWORD, **extra):
    return run_module("model_artifact", dict(
        name="scale", version=version, dest=str(tmp_path / "artifacts"),
        image=f"{registry['host']}/edgeai/models-scale:{tag}", registry_username=USER,
        registry_password=password, ca_path=registry["ca"], **extra))


def test_model_repository_is_taken_from_an_image(registry, tmp_path):
    base = layer({"etc/os-release": b"ID=scratch\n", "models/scale/config.pbtxt": CONFIG,
                  "models/scale/1/model.py": b"K = 1\n", "models/scale/1/old.bin": b"stale"})
    top = layer({"models/scale/1/.wh.old.bin": b""})
    digest = push(registry, "edgeai/models-scale", "1", [base, top])

    failed, result = stage(registry, tmp_path, "1", 1)
    assert not failed, result
    assert result["changed"] and result["source"] == "image" and result["source_id"] == digest
    staged = tmp_path / "artifacts" / "scale" / "1"
    assert (staged / "model.py").read_text() == "K = 1\n"
    assert (staged / "config.pbtxt").read_bytes() == CONFIG
    assert not (staged / "old.bin").exists()  # removed by the upper layer's whiteout
    assert not (staged / "etc").exists()  # only image_path is taken

    failed, again = stage(registry, tmp_path, "1", 1)
    assert not failed and again["changed"] is False and again["downloaded_bytes"] == 0, again


def test_wrong_password_and_missing_tag_are_refused(registry, tmp_path):
    push(registry, "edgeai/models-scale", "2", [layer({"models/scale/2/model.py": b"K = 2\n"})])
    failed, result = stage(registry, tmp_path, "2", 2, password="wrong")
    assert failed and ("401" in result["msg"] or "credentials" in result["msg"]), result
    assert PASSWORD not in json.dumps(result)
    failed, result = stage(registry, tmp_path, "no-such-tag", 2)
    assert failed and "404" in result["msg"], result
    assert not (tmp_path / "artifacts" / "scale" / "2").exists()


def test_untrusted_registry_certificate_is_refused(registry, tmp_path):
    push(registry, "edgeai/models-scale", "3", [layer({"models/scale/3/model.py": b"K = 3\n"})])
    failed, result = run_module("model_artifact", dict(
        name="scale", version=3, dest=str(tmp_path / "artifacts"),
        image=f"{registry['host']}/edgeai/models-scale:3", registry_username=USER, registry_password=PASSWORD))
    assert failed, result
    assert not (tmp_path / "artifacts" / "scale" / "3").exists()
