# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""model_artifact's engine (plugins/module_utils/_artifact.py) against real HTTP servers on
loopback: resumable downloads, https with a private CA, an OCI registry (API v2 with basic
auth), checksum and archive refusals, atomic staging, retention, check mode, free space."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import ssl
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import trustme
from ansible_collections.edgeai.fleet.plugins.module_utils._artifact import (
    ARGUMENT_SPEC,
    Downloader,
    ModelArtifact,
    parse_image_ref,
)
from ansible_collections.edgeai.fleet.plugins.module_utils._errors import ArtifactError, UnsafeArchiveError
from artifact_helpers import params, plenty, sha, tar_bytes


# -- servers -----------------------------------------------------------------------------
class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        srv = self.server
        srv.log.append((self.path, self.headers.get("Range"), self.headers.get("Authorization")))
        if srv.registry is not None:
            return self._registry()
        body = srv.files.get(self.path.split("?")[0])
        if body is None:
            return self._send(404, b"missing")
        start = 0
        status = 200
        rng = self.headers.get("Range")
        if rng and srv.ranges:
            start = int(re.match(r"bytes=(\d+)-", rng).group(1))
            if start >= len(body):
                return self._send(416, b"")
            status = 206
        chunk = body[start:]
        self.send_response(status)
        self.send_header("Content-Length", str(len(chunk)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        if srv.drops:
            cut = srv.drops.pop(0)
            self.wfile.write(chunk[:cut])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return None
        self.wfile.write(chunk)
        return None

    def _registry(self):
        srv = self.server
        expected = "Basic " + base64.b64encode(b"robot:s3cret").decode()
        if self.headers.get("Authorization") != expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="lab"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        match = re.match(r"^/v2/(.+)/(manifests|blobs)/(.+)$", self.path)
        if not match:
            return self._send(404, b"")
        repo, kind, ref = match.groups()
        item = srv.registry.get((repo, kind, ref))
        if item is None:
            return self._send(404, b"")
        body, media = item
        self._send(200, body, media)

    def _send(self, status, body, ctype="application/octet-stream"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def http_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.files, server.log, server.drops, server.ranges, server.registry = {}, [], [], True, None
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def https_server(tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.files, server.log, server.drops, server.ranges, server.registry = {}, [], [], True, None
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    server.url = f"https://127.0.0.1:{server.server_address[1]}"
    server.ca_path = str(tmp_path / "ca.pem")
    ca.cert_pem.write_to_path(server.ca_path)
    yield server
    server.shutdown()
    server.server_close()


# -- helpers -----------------------------------------------------------------------------
CONFIG = 'name: "scale"\nbackend: "python"\n'
V1 = tar_bytes({"config.pbtxt": CONFIG, "1/model.py": "K = 1\n"}, wrap="scale")
V2 = tar_bytes({"config.pbtxt": CONFIG, "2/model.py": "K = 2\n"}, wrap="scale")


# -- downloads -----------------------------------------------------------------------------
def test_url_download_stages_version_and_second_run_changes_nothing(tmp_path, http_server):
    http_server.files["/scale-1.tgz"] = V1
    p = params(tmp_path, url=http_server.url + "/scale-1.tgz", sha256=sha(V1))
    result = ModelArtifact(dict(p), statvfs_free=plenty).run()
    staged = tmp_path / "artifacts" / "scale" / "1"
    assert result["changed"] is True
    assert (staged / "model.py").read_text() == "K = 1\n"
    assert (staged / "config.pbtxt").read_text() == CONFIG
    assert result["files"] == ["config.pbtxt", "model.py"]
    assert result["downloaded_bytes"] == len(V1)
    assert not (tmp_path / "artifacts" / ".downloads").exists()

    requests_before = len(http_server.log)
    again = ModelArtifact(dict(p), statvfs_free=plenty).run()
    assert again["changed"] is False
    assert again["digest"] == result["digest"]
    assert len(http_server.log) == requests_before  # nothing downloaded


def test_interrupted_download_resumes_with_range(tmp_path, http_server):
    payload = V1 + os.urandom(300_000)  # junk after the gzip stream is ignored by tarfile
    http_server.files["/big.tgz"] = payload
    http_server.drops = [100_000]  # the first response is cut after 100 kB
    loader = Downloader(retries=2, backoff=0)
    part = tmp_path / "x.part"
    info = loader.fetch(http_server.url + "/big.tgz", str(part), sha(payload))
    assert info["resumed"] is True
    assert part.read_bytes() == payload
    ranges = [r for (_p, r, _a) in http_server.log]
    assert ranges == [None, "bytes=100000-"]


def test_partial_file_from_an_earlier_run_is_resumed(tmp_path, http_server):
    payload = os.urandom(50_000)
    http_server.files["/m.bin"] = payload
    part = tmp_path / "m.part"
    part.write_bytes(payload[:20_000])
    info = Downloader(backoff=0).fetch(http_server.url + "/m.bin", str(part), sha(payload))
    assert info == {"bytes": 30_000, "resumed": True, "attempts": 1}
    assert part.read_bytes() == payload


def test_server_without_range_support_restarts_from_zero(tmp_path, http_server):
    payload = os.urandom(10_000)
    http_server.files["/m.bin"] = payload
    http_server.ranges = False
    part = tmp_path / "m.part"
    part.write_bytes(payload[:4000])
    info = Downloader(backoff=0).fetch(http_server.url + "/m.bin", str(part), sha(payload))
    assert info["resumed"] is False
    assert part.read_bytes() == payload


def test_stale_partial_with_wrong_bytes_is_redownloaded(tmp_path, http_server):
    payload = os.urandom(10_000)
    http_server.files["/m.bin"] = payload
    part = tmp_path / "m.part"
    part.write_bytes(b"\xff" * 4000)
    Downloader(backoff=0).fetch(http_server.url + "/m.bin", str(part), sha(payload))
    assert part.read_bytes() == payload


def test_download_gives_up_after_retries(tmp_path, http_server):
    http_server.files["/m.bin"] = os.urandom(10_000)
    http_server.drops = [1000, 1000, 1000]
    with pytest.raises(ArtifactError, match="interrupted after 3 attempts"):
        Downloader(retries=2, backoff=0).fetch(http_server.url + "/m.bin", str(tmp_path / "m.part"),
                                               sha(http_server.files["/m.bin"]))
    assert (tmp_path / "m.part").stat().st_size == 3000  # kept for the next run to resume


def test_checksum_mismatch_is_refused_and_nothing_changes(tmp_path, http_server):
    http_server.files["/scale-1.tgz"] = V1
    http_server.files["/scale-2.tgz"] = V2
    ModelArtifact(params(tmp_path, url=http_server.url + "/scale-1.tgz", sha256=sha(V1)), statvfs_free=plenty).run()
    before = sorted(os.walk(tmp_path / "artifacts"))
    with pytest.raises(ArtifactError, match="sha256 mismatch"):
        ModelArtifact(params(tmp_path, version=2, url=http_server.url + "/scale-2.tgz", sha256="0" * 64),
                      statvfs_free=plenty).run()
    assert sorted(os.walk(tmp_path / "artifacts")) == before


def test_url_needs_sha256_and_a_sane_scheme(tmp_path):
    with pytest.raises(ArtifactError, match="sha256 is required"):
        ModelArtifact(params(tmp_path, url="https://127.0.0.1/x.tgz")).run()
    with pytest.raises(ArtifactError, match="https"):
        ModelArtifact(params(tmp_path, url="ftp://127.0.0.1/x.tgz", sha256="0" * 64)).run()


def test_https_with_private_ca_and_token(tmp_path, https_server):
    https_server.files["/scale-1.tgz"] = V1
    p = params(tmp_path, url=https_server.url + "/scale-1.tgz", sha256=sha(V1), url_token="t0ken")
    with pytest.raises(ArtifactError):  # the default trust store does not know the test CA
        ModelArtifact(dict(p, retries=0), statvfs_free=plenty).run()
    result = ModelArtifact(dict(p, ca_path=https_server.ca_path), statvfs_free=plenty).run()
    assert result["changed"] is True
    assert https_server.log[-1][2] == "Bearer t0ken"


def test_basic_auth_for_an_artifact_store(tmp_path, https_server):
    https_server.files["/scale-1.tgz"] = V1
    p = params(tmp_path, url=https_server.url + "/scale-1.tgz", sha256=sha(V1), ca_path=https_server.ca_path,
               url_username="models", url_password="s3cret")
    assert ModelArtifact(dict(p), statvfs_free=plenty).run()["changed"] is True
    assert https_server.log[-1][2] == "Basic " + base64.b64encode(b"models:s3cret").decode()


def test_rate_limited_download_waits_in_proportion_to_the_bytes(tmp_path, http_server):
    payload = os.urandom(200_000)
    http_server.files["/m.bin"] = payload
    waited = []
    loader = Downloader(backoff=0, sleep=waited.append, rate_limit=50_000)
    info = loader.fetch(http_server.url + "/m.bin", str(tmp_path / "m.part"), sha(payload))
    assert info["bytes"] == len(payload)
    # 200 kB at 50 kB/s: by the last block the throttle holds the download back to about 4 s
    # (the sleeps here return at once, so the last wait is the whole remaining lead)
    assert 3.0 < max(waited) <= 4.0


# -- archives and staging -------------------------------------------------------------
def test_path_traversal_archive_is_refused_and_nothing_staged(tmp_path):
    evil = tmp_path / "evil.tgz"
    evil.write_bytes(tar_bytes({"model.py": "x", "../../escaped.txt": "pwned"}))
    with pytest.raises(UnsafeArchiveError):
        ModelArtifact(params(tmp_path, src=str(evil)), statvfs_free=plenty).run()
    assert not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path / "artifacts" / "scale").exists()


def test_src_single_file_staging_check_mode_and_diff(tmp_path):
    model = tmp_path / "model.tflite"
    model.write_bytes(b"TFL3-v1")
    p = params(tmp_path, src=str(model), name="det")
    planned = ModelArtifact(dict(p), check_mode=True, statvfs_free=plenty).run()
    assert planned["changed"] is True
    assert not (tmp_path / "artifacts" / "det" / "1").exists()
    done = ModelArtifact(dict(p), statvfs_free=plenty).run()
    assert done["files"] == ["model.tflite"]
    assert "model.tflite" in done["diff"]["after"]
    assert ModelArtifact(dict(p), check_mode=True, statvfs_free=plenty).run()["changed"] is False
    # new bytes under the same version: changed, replaced atomically
    model.write_bytes(b"TFL3-v1-fixed")
    redo = ModelArtifact(dict(p), statvfs_free=plenty).run()
    assert redo["changed"] is True
    assert (tmp_path / "artifacts" / "det" / "1" / "model.tflite").read_bytes() == b"TFL3-v1-fixed"
    assert [n for n in os.listdir(tmp_path / "artifacts" / "det") if n.startswith(".tmp")] == []


def test_src_checksum_is_verified_when_given(tmp_path):
    model = tmp_path / "model.tflite"
    model.write_bytes(b"TFL3")
    with pytest.raises(ArtifactError, match="sha256 mismatch"):
        ModelArtifact(params(tmp_path, src=str(model), sha256="1" * 64), statvfs_free=plenty).run()


def test_same_bytes_from_another_source_is_not_a_change(tmp_path):
    model = tmp_path / "a" / "model.tflite"
    model.parent.mkdir()
    model.write_bytes(b"TFL3")
    copy = tmp_path / "b" / "model.tflite"
    copy.parent.mkdir()
    copy.write_bytes(b"TFL3")
    assert ModelArtifact(params(tmp_path, src=str(model)), statvfs_free=plenty).run()["changed"] is True
    assert ModelArtifact(params(tmp_path, src=str(copy.parent)), statvfs_free=plenty).run()["changed"] is False


def test_tampered_staged_files_are_restaged(tmp_path):
    model = tmp_path / "model.tflite"
    model.write_bytes(b"TFL3")
    ModelArtifact(params(tmp_path, src=str(model)), statvfs_free=plenty).run()
    (tmp_path / "artifacts" / "scale" / "1" / "model.tflite").write_bytes(b"evil")
    result = ModelArtifact(params(tmp_path, src=str(model)), statvfs_free=plenty).run()
    assert result["changed"] is True
    assert (tmp_path / "artifacts" / "scale" / "1" / "model.tflite").read_bytes() == b"TFL3"


def test_keeps_last_n_versions(tmp_path):
    model = tmp_path / "model.tflite"
    for version in range(1, 6):
        model.write_bytes(b"TFL3-%d" % version)
        result = ModelArtifact(params(tmp_path, src=str(model), version=version, keep_versions=3),
                               statvfs_free=plenty).run()
    assert result["kept_versions"] == [3, 4, 5]
    assert result["removed_versions"] == [2]
    assert sorted(os.listdir(tmp_path / "artifacts" / "scale")) == ["3", "4", "5"]


def test_refuses_when_free_space_is_short(tmp_path, http_server):
    http_server.files["/scale-1.tgz"] = V1
    p = params(tmp_path, url=http_server.url + "/scale-1.tgz", sha256=sha(V1), min_free_space_mb=1)
    with pytest.raises(ArtifactError, match="not enough free space"):
        ModelArtifact(p, statvfs_free=lambda path: 1024 * 1024 + 10).run()
    assert not (tmp_path / "artifacts" / "scale" / "1").exists()


def test_triton_layout_with_several_versions_picks_the_asked_one(tmp_path):
    archive = tmp_path / "repo.tgz"
    archive.write_bytes(tar_bytes({"config.pbtxt": CONFIG, "1/model.py": "K = 1\n", "2/model.py": "K = 2\n"}))
    ModelArtifact(params(tmp_path, src=str(archive), version=2), statvfs_free=plenty).run()
    assert (tmp_path / "artifacts" / "scale" / "2" / "model.py").read_text() == "K = 2\n"
    with pytest.raises(ArtifactError, match="holds versions 1, 2 but not 3"):
        ModelArtifact(params(tmp_path, src=str(archive), version=3), statvfs_free=plenty).run()


# -- OCI registry ----------------------------------------------------------------------
def layer(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    blob = buf.getvalue()
    return "sha256:" + sha(blob), blob


def publish(server, repo, tag, layers, arch="amd64"):
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + "0" * 64,
                           "size": 2},
                "layers": []}
    for digest, blob in layers:
        server.registry[(repo, "blobs", digest)] = (blob, "application/octet-stream")
        manifest["layers"].append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                   "digest": digest, "size": len(blob)})
    raw = json.dumps(manifest).encode()
    mdigest = "sha256:" + sha(raw)
    server.registry[(repo, "manifests", mdigest)] = (raw, manifest["mediaType"])
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [{"mediaType": manifest["mediaType"], "digest": mdigest, "size": len(raw),
                            "platform": {"os": "linux", "architecture": arch}}]}
    server.registry[(repo, "manifests", tag)] = (json.dumps(index).encode(), index["mediaType"])
    return mdigest


def test_oci_image_source_with_basic_auth_and_whiteouts(tmp_path, http_server):
    http_server.registry = {}
    base = layer({"models/scale/config.pbtxt": CONFIG.encode(), "models/scale/1/model.py": b"K = 1\n",
                  "models/scale/1/stale.bin": b"old", "etc/os-release": b"x"})
    top = layer({"models/scale/1/.wh.stale.bin": b""})
    digest = publish(http_server, "edgeai/models-scale", "1", [base, top])
    registry = http_server.url.split("://", 1)[1]
    p = params(tmp_path, image=f"{registry}/edgeai/models-scale:1", registry_username="robot",
               registry_password="s3cret")
    result = ModelArtifact(dict(p), statvfs_free=plenty, registry_scheme="http").run()
    staged = tmp_path / "artifacts" / "scale" / "1"
    assert result["source_id"] == digest
    assert sorted(os.listdir(staged)) == [".edgeai-artifact.json", "config.pbtxt", "model.py"]
    # unchanged image: only the manifest is read again, no blob
    blobs_before = sum(1 for path, _r, _a in http_server.log if "/blobs/" in path)
    assert ModelArtifact(dict(p), statvfs_free=plenty, registry_scheme="http").run()["changed"] is False
    assert sum(1 for path, _r, _a in http_server.log if "/blobs/" in path) == blobs_before


def test_oci_wrong_credentials_and_corrupt_blob(tmp_path, http_server):
    http_server.registry = {}
    digest, blob = layer({"models/scale/1/model.py": b"K = 1\n"})
    publish(http_server, "edgeai/models-scale", "1", [(digest, blob)])
    registry = http_server.url.split("://", 1)[1]
    p = params(tmp_path, image=f"{registry}/edgeai/models-scale:1", registry_username="robot",
               registry_password="wrong")
    with pytest.raises(ArtifactError, match="refused the credentials|HTTP 401"):
        ModelArtifact(dict(p), statvfs_free=plenty, registry_scheme="http").run()
    corrupt = blob[:20] + bytes([blob[20] ^ 0xFF]) + blob[21:]
    http_server.registry[("edgeai/models-scale", "blobs", digest)] = (corrupt, "application/octet-stream")
    with pytest.raises(ArtifactError, match="failed verification"):
        ModelArtifact(dict(p, registry_password="s3cret"), statvfs_free=plenty, registry_scheme="http").run()
    assert not (tmp_path / "artifacts" / "scale" / "1").exists()


def test_parse_image_ref():
    assert parse_image_ref("registry.edgeai.lab:5443/edgeai/m:3") == ("registry.edgeai.lab:5443", "edgeai/m", "3")
    assert parse_image_ref("localhost/m") == ("localhost", "m", "latest")
    ref = "r.example/m@sha256:" + "a" * 64
    assert parse_image_ref(ref) == ("r.example", "m", "sha256:" + "a" * 64)
    with pytest.raises(ArtifactError):
        parse_image_ref("edgeai/m:3")


def test_protected_versions_survive_pruning_whatever_their_numbers(tmp_path):
    # The server serves 9 (staged earlier); staging 2, 3 and 4 with keep 2 must not remove 9,
    # the version a rollback would return to.
    model = tmp_path / "model.tflite"
    for version in (9, 2, 3, 4):
        model.write_bytes(b"TFL3-%d" % version)
        result = ModelArtifact(params(tmp_path, src=str(model), version=version, keep_versions=2,
                                      protect_versions=[9]), statvfs_free=plenty).run()
    assert 9 in result["kept_versions"] and 4 in result["kept_versions"]
    assert sorted(os.listdir(tmp_path / "artifacts" / "scale")) == ["4", "9"]


def test_require_staged_uses_what_is_staged_and_fetches_nothing(tmp_path, http_server):
    http_server.files["/scale-1.tgz"] = V1
    p = params(tmp_path, url=http_server.url + "/scale-1.tgz", sha256=sha(V1))
    with pytest.raises(ArtifactError, match="scale version 1 is not staged on this device.*stage it first"):
        ModelArtifact(dict(p, require_staged=True), statvfs_free=plenty).run()
    assert http_server.log == []  # the refusal fetched nothing
    ModelArtifact(dict(p), statvfs_free=plenty).run()  # the stage phase
    fetched = len(http_server.log)
    # the activate phase may name another URL (a site cache) for the same bytes
    moved = dict(p, url="https://cache.invalid/scale-1.tgz", require_staged=True)
    result = ModelArtifact(moved, statvfs_free=plenty).run()
    assert result["changed"] is False
    assert len(http_server.log) == fetched


# -- caps and a directory with sha256 -----------------------------------------------------------
def test_directory_src_is_verified_against_its_tree_digest(tmp_path):
    src = tmp_path / "scale"
    (src / "1").mkdir(parents=True)
    (src / "1" / "model.py").write_text("K = 1\n")
    first = ModelArtifact(params(tmp_path, src=str(src)), statvfs_free=plenty).run()
    tree = first["source_id"].split(":", 1)[1]
    again = ModelArtifact(params(tmp_path, src=str(src), sha256=tree, version=2), statvfs_free=plenty).run()
    assert again["changed"] is True and again["source_id"] == first["source_id"]
    with pytest.raises(ArtifactError, match="sha256 mismatch for the directory .*tree digest"):
        ModelArtifact(params(tmp_path, src=str(src), sha256="2" * 64, version=3), statvfs_free=plenty).run()


def test_unpacking_caps_have_real_model_defaults_and_can_be_raised(tmp_path):
    assert ARGUMENT_SPEC["max_unpacked_mb"]["default"] == 8192
    assert ARGUMENT_SPEC["max_members"]["default"] == 20000
    archive = tmp_path / "many.tgz"
    archive.write_bytes(tar_bytes({f"1/f{i}": "x" * 100 for i in range(30)}))
    with pytest.raises(ArtifactError, match="more than 20 members"):
        ModelArtifact(params(tmp_path, src=str(archive), max_members=20), statvfs_free=plenty).run()
    assert not (tmp_path / "artifacts" / "scale").exists()
    result = ModelArtifact(params(tmp_path, src=str(archive), max_members=30, max_unpacked_mb=1),
                           statvfs_free=plenty).run()
    assert len(result["files"]) == 30
    with pytest.raises(ArtifactError, match="max_members must be at least 1"):
        ModelArtifact(params(tmp_path, src=str(archive), max_members=0), statvfs_free=plenty).run()


def test_image_layers_share_one_byte_cap(tmp_path, http_server):
    http_server.registry = {}
    one = layer({"models/scale/1/a.bin": b"a" * 700_000})
    two = layer({"models/scale/1/b.bin": b"b" * 700_000})
    publish(http_server, "edgeai/models-scale", "1", [one, two])
    registry = http_server.url.split("://", 1)[1]
    p = params(tmp_path, image=f"{registry}/edgeai/models-scale:1", registry_username="robot",
               registry_password="s3cret", max_unpacked_mb=1)
    with pytest.raises(ArtifactError, match="unpacks to more than 1 MiB"):
        ModelArtifact(dict(p), statvfs_free=plenty, registry_scheme="http").run()
    assert not (tmp_path / "artifacts" / "scale").exists()
    assert ModelArtifact(dict(p, max_unpacked_mb=2), statvfs_free=plenty, registry_scheme="http").run()["changed"]
