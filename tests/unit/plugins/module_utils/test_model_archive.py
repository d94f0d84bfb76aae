# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Archive safety and tree digests (plugins/module_utils/_archive.py)."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile

import pytest
from ansible_collections.edgeai.fleet.plugins.module_utils._archive import (
    clean_member_name,
    detect_format,
    extract_tar,
    extract_zip,
    tree_digest,
)
from ansible_collections.edgeai.fleet.plugins.module_utils._errors import UnsafeArchiveError


def make_tar(path, members, mode="w:gz"):
    """members: list of (name, kind, payload) with kind file|dir|symlink|hardlink|fifo."""
    with tarfile.open(path, mode) as archive:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                data = payload.encode() if isinstance(payload, str) else payload
                info.size = len(data)
                info.mode = 0o644
                archive.addfile(info, io.BytesIO(data))
                continue
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
            elif kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = payload
            elif kind == "hardlink":
                info.type = tarfile.LNKTYPE
                info.linkname = payload
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            archive.addfile(info)
    return path


def make_zip(path, members):
    with zipfile.ZipFile(path, "w") as archive:
        for name, kind, payload in members:
            info = zipfile.ZipInfo(name)
            if kind == "symlink":
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            else:
                info.external_attr = (stat.S_IFREG | 0o644) << 16
            archive.writestr(info, payload)
    return path


@pytest.fixture
def outside(tmp_path):
    """A file next to the destination that an escaping archive would overwrite."""
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched")
    return victim


@pytest.mark.parametrize(
    "members",
    [
        [("/etc/evil", "file", "x")],
        [("../victim.txt", "file", "pwned")],
        [("a/../../victim.txt", "file", "pwned")],
        [("link", "symlink", "/etc/passwd")],
        [("link", "symlink", "../victim.txt")],
        [("a/link", "symlink", "../../victim.txt")],
        [("hl", "hardlink", "../victim.txt")],
        [("pipe", "fifo", None)],
    ],
    ids=["absolute", "dotdot", "nested-dotdot", "symlink-absolute", "symlink-up", "nested-symlink-up",
         "hardlink-up", "fifo"],
)
def test_tar_refuses_escapes_and_writes_nothing(tmp_path, outside, members):
    archive = make_tar(tmp_path / "bad.tar.gz", [("ok.txt", "file", "fine")] + members)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(UnsafeArchiveError):
        extract_tar(str(archive), str(dest))
    assert outside.read_text() == "untouched"
    # every member is checked before the first byte is written
    assert os.listdir(dest) == []


def test_tar_symlink_then_file_through_it_cannot_escape(tmp_path, outside):
    # "d -> ." is harmless; a link that points up is refused before anything is written
    archive = make_tar(tmp_path / "bad.tar", [("d", "symlink", ".."), ("d/victim.txt", "file", "pwned")], "w")
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(UnsafeArchiveError):
        extract_tar(str(archive), str(dest))
    assert outside.read_text() == "untouched"


def test_tar_inner_links_and_strip(tmp_path):
    archive = make_tar(tmp_path / "ok.tar.gz", [
        ("pkg", "dir", None),
        ("pkg/model", "dir", None),
        ("pkg/model/1/model.bin", "file", b"\x00\x01"),
        ("pkg/model/1/alias.bin", "symlink", "model.bin"),
        ("pkg/model/1/copy.bin", "hardlink", "pkg/model/1/model.bin"),
        ("pkg/other.txt", "file", "not taken"),
    ])
    dest = tmp_path / "dest"
    dest.mkdir()
    written = extract_tar(str(archive), str(dest), strip="pkg/model")
    assert written == 2
    assert (dest / "1" / "model.bin").read_bytes() == b"\x00\x01"
    assert os.readlink(dest / "1" / "alias.bin") == "model.bin"
    assert (dest / "1" / "copy.bin").read_bytes() == b"\x00\x01"
    assert not (dest / "other.txt").exists()


def test_oci_whiteouts_remove_earlier_layer_files(tmp_path):
    dest = tmp_path / "root"
    dest.mkdir()
    extract_tar(str(make_tar(tmp_path / "l1.tar", [("m/1/a", "file", "a"), ("m/1/b", "file", "b")], "w")), str(dest))
    extract_tar(str(make_tar(tmp_path / "l2.tar", [("m/1/.wh.a", "file", "")], "w")), str(dest), whiteouts=True)
    assert sorted(os.listdir(dest / "m" / "1")) == ["b"]


@pytest.mark.parametrize(
    "members",
    [
        [("/abs.txt", "file", "x")],
        [("../victim.txt", "file", "pwned")],
        [("..\\victim.txt", "file", "pwned")],
        [("link", "symlink", "../victim.txt")],
        [("link", "symlink", "/etc/passwd")],
    ],
    ids=["absolute", "dotdot", "backslash-dotdot", "symlink-up", "symlink-absolute"],
)
def test_zip_refuses_escapes(tmp_path, outside, members):
    archive = make_zip(tmp_path / "bad.zip", [("ok.txt", "file", "fine")] + members)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(UnsafeArchiveError):
        extract_zip(str(archive), str(dest))
    assert outside.read_text() == "untouched"
    assert os.listdir(dest) == []


def test_zip_extracts_and_keeps_exec_bit(tmp_path):
    archive = tmp_path / "ok.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        info = zipfile.ZipInfo("bin/run.sh")
        info.external_attr = (stat.S_IFREG | 0o755) << 16
        handle.writestr(info, "#!/bin/sh\n")
        handle.writestr("model.tflite", b"TFL3")
    dest = tmp_path / "dest"
    dest.mkdir()
    extract_zip(str(archive), str(dest))
    assert (dest / "model.tflite").read_bytes() == b"TFL3"
    assert os.stat(dest / "bin" / "run.sh").st_mode & 0o111


def test_detect_format(tmp_path):
    assert detect_format(str(make_zip(tmp_path / "a.zip", [("x", "file", "x")]))) == "zip"
    assert detect_format(str(make_tar(tmp_path / "a.tgz", [("x", "file", "x")]))) == "tar"
    plain = tmp_path / "model.tflite"
    plain.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 600)
    assert detect_format(str(plain)) == "file"


def test_clean_member_name():
    assert clean_member_name("./a//b/./c") == "a/b/c"
    with pytest.raises(UnsafeArchiveError):
        clean_member_name("C:/windows")


def test_tree_digest_tracks_content_names_and_exec_bit(tmp_path):
    root = tmp_path / "t"
    (root / "1").mkdir(parents=True)
    (root / "1" / "model.py").write_text("k = 1\n")
    first = tree_digest(str(root))
    assert tree_digest(str(root)) == first
    (root / "1" / "model.py").write_text("k = 2\n")
    second = tree_digest(str(root))
    assert second != first
    os.chmod(root / "1" / "model.py", 0o755)
    assert tree_digest(str(root)) != second
    (root / "extra").write_text("")
    assert tree_digest(str(root), exclude=("extra",)) == tree_digest(str(root), exclude=("extra",))
    assert tree_digest(str(root), exclude=("extra",)) != tree_digest(str(root))
