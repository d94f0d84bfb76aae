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
    Limits,
    MiB,
    clean_member_name,
    copy_tree_checked,
    detect_format,
    extract_tar,
    extract_zip,
    tree_digest,
)
from ansible_collections.edgeai.fleet.plugins.module_utils._errors import ArtifactError, UnsafeArchiveError


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


def refused(tmp_path, outside, extract, archive):
    """Extract archive into a new folder, which must fail as unsafe and leave outside as it was;
    the folder, for what else the test checks."""
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(UnsafeArchiveError):
        extract(str(archive), str(dest))
    assert outside.read_text() == "untouched"
    return dest


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
    dest = refused(tmp_path, outside, extract_tar, archive)
    # every member is checked before the first byte is written
    assert os.listdir(dest) == []


def test_tar_symlink_then_file_through_it_cannot_escape(tmp_path, outside):
    # "d -> ." is harmless; a link that points up is refused before anything is written
    archive = make_tar(tmp_path / "bad.tar", [("d", "symlink", ".."), ("d/victim.txt", "file", "pwned")], "w")
    refused(tmp_path, outside, extract_tar, archive)


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
    dest = refused(tmp_path, outside, extract_zip, archive)
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


# -- what the strict unpacking still accepts ------------------------------------------------
def test_link_chains_that_stay_inside_are_kept(tmp_path):
    archive = make_tar(tmp_path / "ok.tar", [
        ("1/model.bin", "file", "weights"),
        ("current", "symlink", "1"),
        ("1/alias.bin", "symlink", "model.bin"),
        ("top.bin", "symlink", "current/alias.bin"),
        ("later", "symlink", "not-yet/there"),  # dangling, but inside
    ], "w")
    dest = tmp_path / "dest"
    dest.mkdir()
    extract_tar(str(archive), str(dest))
    assert (dest / "top.bin").read_text() == "weights"
    assert os.readlink(dest / "later") == "not-yet/there"


def test_caps_count_bytes_and_members_and_can_be_raised(tmp_path):
    archive = make_tar(tmp_path / "ok.tgz", [(f"f{i}", "file", "x" * 1000) for i in range(10)])
    for folder in ("a", "b", "c"):
        (tmp_path / folder).mkdir()
    with pytest.raises(ArtifactError, match="more than 9 members .*raise max_members"):
        extract_tar(str(archive), str(tmp_path / "a"), limits=Limits(max_members=9))
    with pytest.raises(ArtifactError, match="unpacks to more than"):
        extract_tar(str(archive), str(tmp_path / "b"), limits=Limits(max_bytes=9999))
    limits = Limits.from_mb(1, 10)
    assert extract_tar(str(archive), str(tmp_path / "c"), limits=limits) == 10_000
    assert (limits.bytes, limits.members, limits.max_bytes) == (10_000, 10, MiB)


def test_sparse_member_unpacks_to_its_apparent_size(tmp_path):
    info = tarfile.TarInfo("model.bin")
    info.size = 1
    info.pax_headers = {"GNU.sparse.map": "4095,1", "GNU.sparse.size": "4096"}
    with tarfile.open(tmp_path / "s.tar", "w", format=tarfile.PAX_FORMAT) as handle:
        handle.addfile(info, io.BytesIO(b"x"))
    dest = tmp_path / "dest"
    dest.mkdir()
    assert extract_tar(str(tmp_path / "s.tar"), str(dest)) == 4096
    assert (dest / "model.bin").read_bytes() == b"\0" * 4095 + b"x"


def test_oci_layer_file_replaces_a_folder_and_whiteouts_come_first(tmp_path):
    dest = tmp_path / "root"
    dest.mkdir()
    extract_tar(str(make_tar(tmp_path / "l1.tar", [("m/x/a", "file", "a"), ("m/keep", "file", "k")], "w")),
                str(dest), whiteouts=True)
    # an opaque whiteout hides the earlier layer's m/, not this layer's own new files
    extract_tar(str(make_tar(tmp_path / "l2.tar", [("m/new", "file", "n"), ("m/.wh..wh..opq", "file", "")], "w")),
                str(dest), whiteouts=True)
    assert sorted(os.listdir(dest / "m")) == ["new"]
    # a later layer may turn a file into a folder and back (the entry is replaced, not followed)
    extract_tar(str(make_tar(tmp_path / "l3.tar", [("m/new", "dir", None), ("m/new/f", "file", "f")], "w")),
                str(dest), whiteouts=True)
    assert (dest / "m" / "new" / "f").read_text() == "f"
    extract_tar(str(make_tar(tmp_path / "l4.tar", [("m/new", "file", "file again")], "w")), str(dest),
                whiteouts=True)
    assert (dest / "m" / "new").read_text() == "file again"


def test_copy_tree_checked_keeps_inner_links_and_refuses_chains_out(tmp_path):
    src = tmp_path / "src"
    (src / "1").mkdir(parents=True)
    (src / "1" / "model.bin").write_text("w")
    os.symlink("1", src / "current")
    os.symlink("current/model.bin", src / "alias")
    copy_tree_checked(str(src), str(tmp_path / "copy"))
    assert (tmp_path / "copy" / "alias").read_text() == "w"
    assert os.path.islink(tmp_path / "copy" / "current")
    os.makedirs(src / "a" / "b" / "c")
    os.symlink("../../..", src / "a" / "b" / "c" / "d")
    os.symlink("a/b/c/d/../../victim", src / "e")
    with pytest.raises(UnsafeArchiveError, match="'e' .* resolves outside the source"):
        copy_tree_checked(str(src), str(tmp_path / "copy2"))


def test_tree_listing_refuses_a_fifo_instead_of_blocking(tmp_path):
    root = tmp_path / "t"
    root.mkdir()
    os.mkfifo(root / "pipe")
    with pytest.raises(UnsafeArchiveError, match="'pipe' .* is not a regular file"):
        tree_digest(str(root))


def test_oci_whiteout_of_the_model_folder_or_a_parent_hides_earlier_layers(tmp_path):
    dest = tmp_path / "root"
    dest.mkdir()
    layers = [
        [("models/scale/1/old.bin", "file", "old")],
        [("models/.wh.scale", "file", ""), ("models/scale/1/new.bin", "file", "new")],
    ]
    for index, members in enumerate(layers):
        extract_tar(str(make_tar(tmp_path / f"l{index}.tar", members, "w")), str(dest), strip="models/scale",
                    whiteouts=True)
    assert os.listdir(dest / "1") == ["new.bin"]
    extract_tar(str(make_tar(tmp_path / "l3.tar", [(".wh..wh..opq", "file", ""), ("models/scale/x", "file", "x")],
                             "w")), str(dest), strip="models/scale", whiteouts=True)
    assert os.listdir(dest) == ["x"]
