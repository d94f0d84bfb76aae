# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Hostile archives and OCI layers against model_artifact (plugins/module_utils/_archive.py and
ModelArtifact's unpacking): chains of links that only escape in combination, in one tar, in one
zip and across two image layers; writes, hard links, folder modes and whiteouts through links;
``..`` whiteouts; bombs by bytes (sparse members, a zip's compression ratio, lying headers) and
by member count; truncated and corrupt archives; a directory src with sha256.

Every test here failed on the code before the fix. Each asserts that nothing outside the
destination changed (a snapshot of the whole test folder: modes, contents, link targets), that
a staged version stays as it was and no work folder is left, and that the error names the
problem. Only APIs that existed before the fix are used, so the file runs against it too."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from ansible.module_utils.testing import patch_module_args
from ansible_collections.edgeai.fleet.plugins.module_utils._archive import extract_tar, extract_zip
from ansible_collections.edgeai.fleet.plugins.module_utils._artifact import ModelArtifact
from ansible_collections.edgeai.fleet.plugins.module_utils._errors import ArtifactError, UnsafeArchiveError
from ansible_collections.edgeai.fleet.plugins.modules import model_artifact
from artifact_helpers import params, plenty

MiB = 1024 * 1024


# -- building hostile archives -----------------------------------------------------------
def tar_blob(members, mode="w:gz", fmt=tarfile.PAX_FORMAT):
    """members: (name, kind, payload) with kind file|dir|symlink|hardlink|sparse; a sparse
    member's payload is its apparent size (one byte of data at the end, the rest a hole)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode, format=fmt) as archive:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            info.mode = 0o644
            if kind == "file":
                data = payload.encode() if isinstance(payload, str) else payload
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
                continue
            if kind == "sparse":
                # GNU sparse format 0.1 in pax headers, as GNU tar --sparse writes it
                info.size = 1
                info.pax_headers = {"GNU.sparse.map": f"{payload - 1},1", "GNU.sparse.size": str(payload)}
                archive.addfile(info, io.BytesIO(b"x"))
                continue
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, payload
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, payload
            archive.addfile(info)
    return buf.getvalue()


def zip_blob(members, compression=zipfile.ZIP_DEFLATED):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as archive:
        for name, kind, payload in members:
            info = zipfile.ZipInfo(name)
            info.compress_type = compression
            kind_bits = stat.S_IFLNK | 0o777 if kind == "symlink" else stat.S_IFREG | 0o644
            info.external_attr = kind_bits << 16
            archive.writestr(info, payload)
    return buf.getvalue()


# The chain: "e" is checked first, while "a/b/c/d" does not exist yet, and alone it stays
# inside (a/b/c/d/../../../.. is "."); "a/b/c/d" alone stays inside too (it is the root).
# Together "e" climbs from the root four folders up, to the test folder's victim.txt
# (the root of an image is <tmp>/artifacts/scale/.tmp-*/image).
CHAIN = [
    ("e", "symlink", "a/b/c/d/../../../../victim.txt"),
    ("out", "symlink", "a/b/c/d/../../../../outside"),
    ("a/b/c/d", "symlink", "../../.."),
]
# an inner link that stays inside: through it a later write would land elsewhere in the tree
INNER = [("a/b/c/d", "symlink", "../../..")]


@pytest.fixture
def outside(tmp_path):
    """What an escape would change: a file and a folder (mode 0700) next to the artifacts."""
    (tmp_path / "victim.txt").write_text("untouched")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "keep.txt").write_text("untouched")
    os.chmod(tmp_path / "outside", 0o700)
    return tmp_path


def snapshot(root):
    """Every path under ``root`` with its mode and content (or link target)."""
    state = {}
    for current, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(current, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                value = "-> " + os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                with open(path, "rb") as handle:
                    value = hashlib.sha256(handle.read()).hexdigest()
            else:
                value = None
            state[os.path.relpath(path, root)] = (stat.S_IMODE(st.st_mode), stat.S_IFMT(st.st_mode), value)
    return state


def stage_good_version(tmp_path):
    """Stage version 1 from a plain file, so a refusal can be shown to leave it alone."""
    good = tmp_path / "good" / "model.tflite"
    good.parent.mkdir()
    good.write_bytes(b"TFL3-good")
    ModelArtifact(params(tmp_path, src=str(good)), statvfs_free=plenty).run()
    assert (tmp_path / "artifacts" / "scale" / "1" / "model.tflite").read_bytes() == b"TFL3-good"


def refused(tmp_path, error, match, **kw):
    """Run ModelArtifact, expect ``error`` matching ``match``; nothing in tmp_path changes."""
    before = snapshot(tmp_path)
    with pytest.raises(error, match=match) as info:
        ModelArtifact(params(tmp_path, **kw), statvfs_free=plenty,
                      registry_scheme="http").run()
    assert snapshot(tmp_path) == before
    assert not [n for n in os.listdir(tmp_path / "artifacts" / "scale") if n.startswith(".tmp")]
    return info.value


def write(tmp_path, name, data):
    path = tmp_path / "in" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    return str(path)


# -- a registry on loopback ---------------------------------------------------------------
class _Registry(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        item = self.server.items.get(self.path)
        body, ctype = item if item else (b"", "text/plain")
        self.send_response(200 if item else 404)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def registry():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Registry)
    server.items = {}
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()

    def publish(repo, tag, layers):
        """An image whose layers are the given tar blobs; returns its reference."""
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                               "digest": "sha256:" + "0" * 64, "size": 2}, "layers": []}
        for blob in layers:
            digest = "sha256:" + hashlib.sha256(blob).hexdigest()
            server.items[f"/v2/{repo}/blobs/{digest}"] = (blob, "application/octet-stream")
            manifest["layers"].append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                       "digest": digest, "size": len(blob)})
        server.items[f"/v2/{repo}/manifests/{tag}"] = (json.dumps(manifest).encode(), manifest["mediaType"])
        return f"127.0.0.1:{server.server_address[1]}/{repo}:{tag}"

    yield publish
    server.shutdown()
    server.server_close()


def under_models(members):
    return [(f"models/scale/{name}", kind, f"models/scale/{payload}" if kind == "hardlink" else payload)
            for name, kind, payload in members]


# -- chains of links in one archive ------------------------------------------------------
def test_tar_link_chain_is_refused_and_nothing_is_staged(tmp_path, outside):
    stage_good_version(tmp_path)
    archive = write(tmp_path, "chain.tgz", tar_blob([("model.bin", "file", "m")] + CHAIN))
    error = refused(tmp_path, UnsafeArchiveError, r"'e' -> 'a/b/c/d/\.\./\.\./\.\./\.\./victim\.txt' resolves outside",
                    src=archive)
    assert error.details["member"] == "e"


def test_tar_link_chain_left_in_the_destination_is_refused(tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    archive = write(tmp_path, "chain.tar", tar_blob([("e", "symlink", "a/b/c/d/../../../../x"),
                                                     ("a/b/c/d", "symlink", "../../..")], "w"))
    with pytest.raises(UnsafeArchiveError, match="'e' .* resolves outside the destination"):
        extract_tar(archive, str(dest))


def test_zip_link_chain_is_refused_and_nothing_is_staged(tmp_path, outside):
    stage_good_version(tmp_path)
    archive = write(tmp_path, "chain.zip", zip_blob([("model.bin", "file", "m")] + CHAIN))
    error = refused(tmp_path, UnsafeArchiveError, "'e' -> .* resolves outside", src=archive)
    assert error.details["member"] == "e"


def test_link_that_climbs_out_of_the_version_folder_is_refused(tmp_path, outside):
    # Inside the archive the link stays inside (it lands on the archive's root), but only the
    # version's folder is staged: from <dest>/scale/1 the same link reaches the test folder.
    stage_good_version(tmp_path)
    archive = write(tmp_path, "wrapped.tgz", tar_blob([
        ("w/w/scale/config.pbtxt", "file", 'name: "scale"\n'),
        ("w/w/scale/1/model.py", "file", "K = 1\n"),
        ("w/w/scale/1/leak", "symlink", "../../../../victim.txt"),
    ]))
    refused(tmp_path, UnsafeArchiveError, "'leak' -> '../../../../victim.txt' resolves outside the version's folder",
            src=archive)


# -- across OCI layers ---------------------------------------------------------------------
def test_oci_hard_link_onto_a_chained_link_of_an_earlier_layer(tmp_path, outside, registry):
    stage_good_version(tmp_path)
    image = registry("edgeai/hostile", "1", [
        tar_blob(under_models([("model.bin", "file", "m")] + CHAIN)),
        tar_blob(under_models([("ok.txt", "file", "pwned"), ("e", "hardlink", "ok.txt")])),
    ])
    error = refused(tmp_path, UnsafeArchiveError, "'e' -> .* resolves outside", image=image)
    assert (tmp_path / "victim.txt").read_text() == "untouched"
    assert error.details["member"] == "e"


def test_oci_directory_entry_through_a_chained_link_changes_no_mode_outside(tmp_path, outside, registry):
    stage_good_version(tmp_path)
    image = registry("edgeai/hostile", "1", [
        tar_blob(under_models([("model.bin", "file", "m")] + CHAIN)),
        tar_blob(under_models([("out", "dir", None)])),
    ])
    refused(tmp_path, UnsafeArchiveError, "resolves outside", image=image)
    assert stat.S_IMODE(os.stat(tmp_path / "outside").st_mode) == 0o700


@pytest.mark.parametrize("second", [
    [("a/b/c/d/x.bin", "file", "through")],
    [("ok.txt", "file", "x"), ("a/b/c/d/copy.bin", "hardlink", "ok.txt")],
    [("ok.txt", "file", "x"), ("copy.bin", "hardlink", "a/b/c/d/ok.txt")],
    [("a/b/c/d/sub", "dir", None)],
    [("a/b/c/d/.wh.model.bin", "file", "")],
], ids=["file", "hardlink-name", "hardlink-target", "dir", "whiteout"])
def test_oci_later_layer_never_writes_through_a_link(tmp_path, outside, registry, second):
    stage_good_version(tmp_path)
    image = registry("edgeai/hostile", "1", [
        tar_blob(under_models([("model.bin", "file", "m")] + INNER)),
        tar_blob(under_models(second)),
    ])
    error = refused(tmp_path, UnsafeArchiveError, "runs through 'a/b/c/d', which is a link", image=image)
    assert error.details["member"].startswith(("a/b/c/d/", "copy.bin"))


# -- '..' in whiteouts ---------------------------------------------------------------------
@pytest.mark.parametrize("whiteout", ["sub/.wh...", ".wh..."], ids=["nested", "top"])
def test_whiteout_of_dotdot_removes_nothing_outside(tmp_path, whiteout):
    outer = tmp_path / "outer"
    dest = outer / "dest"
    (dest / "sub").mkdir(parents=True)
    (dest / "sub" / "keep").write_text("k")
    (outer / "sentinel").write_text("untouched")
    layer = write(tmp_path, "wh.tar", tar_blob([(whiteout, "file", "")], "w"))
    before = snapshot(tmp_path)
    with pytest.raises(UnsafeArchiveError, match=r"whiteout .* '\.\.'"):
        extract_tar(layer, str(dest), whiteouts=True)
    after = snapshot(tmp_path)
    after.pop(os.path.join("in", "wh.tar"), None)
    before.pop(os.path.join("in", "wh.tar"), None)
    assert after == before


# -- bombs ---------------------------------------------------------------------------------
def test_sparse_member_counts_by_its_apparent_size(tmp_path, outside):
    stage_good_version(tmp_path)
    archive = write(tmp_path, "sparse.tgz", tar_blob([("model.bin", "sparse", 200 * MiB)]))
    assert os.path.getsize(archive) < 20_000
    refused(tmp_path, ArtifactError, "unpacks to more than 16 MiB .*raise max_unpacked_mb", src=archive,
            max_unpacked_mb=16)


def test_member_count_bomb_is_refused_by_default(tmp_path, outside):
    stage_good_version(tmp_path)
    archive = write(tmp_path, "many.tgz", tar_blob([(f"f/{i}", "file", b"") for i in range(20_001)]))
    refused(tmp_path, ArtifactError, "more than 20000 members .*raise max_members", src=archive)


def test_zip_ratio_bomb_is_caught_while_reading(tmp_path, outside):
    stage_good_version(tmp_path)
    archive = write(tmp_path, "bomb.zip", zip_blob([("model.bin", "file", b"\0" * (64 * MiB))]))
    assert os.path.getsize(archive) < 200_000  # a ratio over 300:1
    refused(tmp_path, ArtifactError, "unpacks to more than 16 MiB", src=archive, max_unpacked_mb=16)


def test_zip_whose_headers_understate_the_size_is_refused(tmp_path, outside):
    stage_good_version(tmp_path)
    blob = bytearray(zip_blob([("model.bin", "file", b"\0" * (8 * MiB))]))
    real = (8 * MiB).to_bytes(4, "little")
    assert blob.count(real) == 2  # the local header and the central directory
    lying = bytes(blob).replace(real, (1000).to_bytes(4, "little"))
    archive = write(tmp_path, "lying.zip", lying)
    refused(tmp_path, ArtifactError, "truncated or corrupt|unpacks to more than", src=archive, max_unpacked_mb=1)


# -- broken archives -------------------------------------------------------------------------
def _model_tar(mode):
    return tar_blob([("config.pbtxt", "file", 'name: "scale"\n'),
                     ("1/model.bin", "file", os.urandom(300_000)),
                     ("1/labels.txt", "file", "cat\ndog\n" * 2000)], mode)


@pytest.mark.parametrize("cut", ["gzip-middle", "tar-middle", "tar-boundary"])
def test_truncated_tar_is_a_clear_error(tmp_path, outside, cut):
    stage_good_version(tmp_path)
    if cut == "gzip-middle":
        blob = _model_tar("w:gz")
        blob = blob[:len(blob) // 2]
    else:
        blob = _model_tar("w")
        with tarfile.open(fileobj=io.BytesIO(blob)) as archive:
            second = archive.getmembers()[2].offset  # the header of 1/labels.txt
        blob = blob[:second - 100_000] if cut == "tar-middle" else blob[:second]
    archive = write(tmp_path, "cut.tar", blob)
    refused(tmp_path, ArtifactError, "truncated or corrupt", src=archive, format="tar")


def test_corrupt_gzip_is_a_clear_error(tmp_path, outside):
    stage_good_version(tmp_path)
    blob = bytearray(_model_tar("w:gz"))
    for offset in range(len(blob) // 2, len(blob) // 2 + 64):
        blob[offset] ^= 0x5A
    archive = write(tmp_path, "corrupt.tgz", bytes(blob))
    refused(tmp_path, ArtifactError, "truncated or corrupt|cannot be read", src=archive)


def test_bad_zip_is_a_clear_error(tmp_path, outside):
    stage_good_version(tmp_path)
    archive = write(tmp_path, "bad.zip", b"PK\x03\x04" + os.urandom(2000))
    refused(tmp_path, ArtifactError, "not a readable zip archive", src=archive)


def test_zip_member_with_a_bad_crc_is_a_clear_error(tmp_path, outside):
    stage_good_version(tmp_path)
    blob = bytearray(zip_blob([("model.bin", "file", b"M" * 5000)], zipfile.ZIP_STORED))
    blob[100] ^= 0xFF  # inside the stored data
    archive = write(tmp_path, "crc.zip", bytes(blob))
    refused(tmp_path, ArtifactError, "truncated or corrupt", src=archive)


def test_truncated_tar_through_the_module_fails_without_a_traceback(tmp_path, capsys):
    blob = _model_tar("w:gz")
    archive = write(tmp_path, "cut.tgz", blob[:len(blob) // 3])
    with patch_module_args(dict(name="scale", version=1, dest=str(tmp_path / "a"), src=archive)), \
            pytest.raises(SystemExit) as exc:
        model_artifact.main()
    out = json.loads(capsys.readouterr().out)
    assert exc.value.code == 1
    assert out["failed"] is True and "truncated or corrupt" in out["msg"]
    assert not (tmp_path / "a" / "scale").exists()


# -- a directory src with sha256 ---------------------------------------------------------------
def test_directory_src_with_a_wrong_sha256_is_refused(tmp_path, outside):
    stage_good_version(tmp_path)
    src = tmp_path / "dir"
    (src / "1").mkdir(parents=True)
    (src / "1" / "model.py").write_text("K = 2\n")
    refused(tmp_path, ArtifactError, "sha256 mismatch for the directory .*tree digest", src=str(src),
            sha256="1" * 64)


def test_extract_zip_chain_into_a_plain_destination(tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    members = [("e", "symlink", "a/b/c/d/../../../../x"), ("a/b/c/d", "symlink", "../../..")]
    archive = write(tmp_path, "chain.zip", zip_blob(members))
    with pytest.raises(UnsafeArchiveError, match="'e' .* resolves outside the destination"):
        extract_zip(archive, str(dest))
