# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the edgeai.fleet collection: not a public API, may change without notice.
"""Safe unpacking of tar and zip archives and content digests of directory trees.

Every member is checked before anything is written: absolute names, ``..`` components,
links whose target leaves the destination, hard links to outside members, device nodes
and FIFOs are refused with UnsafeArchiveError. Members are written by this code (not by
tarfile.extract), so the checks do not depend on the Python version's tar filters."""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import stat
import tarfile
import zipfile

from ansible_collections.edgeai.fleet.plugins.module_utils._errors import ArtifactError, UnsafeArchiveError

CHUNK = 1024 * 1024


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while True:
            block = handle.read(CHUNK)
            if not block:
                break
            digest.update(block)
    return digest.hexdigest()


def detect_format(path):
    """``zip``, ``tar`` (plain or compressed) or ``file``."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    try:
        if tarfile.is_tarfile(path):
            return "tar"
    except (OSError, tarfile.TarError):
        pass
    return "file"


def clean_member_name(name, what="archive member"):
    """Normalise a member name to a relative POSIX path; refuse absolute paths and ``..``."""
    raw = name
    name = name.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"{what} {raw!r} has an absolute path", member=raw)
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"{what} {raw!r} contains '..'", member=raw)
    return "/".join(parts)


def check_link_target(name, target, what="archive member"):
    """Refuse a symbolic link whose target, resolved from the link's directory, leaves
    the destination (absolute targets included)."""
    if target.startswith("/") or not target:
        raise UnsafeArchiveError(f"{what} {name!r} links to {target!r} outside the destination",
                                 member=name)
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
    if resolved == ".." or resolved.startswith("../") or resolved.startswith("/"):
        raise UnsafeArchiveError(f"{what} {name!r} links to {target!r} outside the destination",
                                 member=name)
    return resolved


def _inside(root, path):
    root = os.path.realpath(root)
    real = os.path.realpath(path)
    return real == root or real.startswith(root + os.sep)


def _target(root, name):
    path = os.path.join(root, *name.split("/"))
    parent = os.path.dirname(path)
    if not _inside(root, parent):
        raise UnsafeArchiveError(f"archive member {name!r} would be written outside the destination",
                                 member=name)
    return path


def _write_stream(src, path, mode):
    if os.path.lexists(path) and not os.path.isdir(path):
        os.unlink(path)
    with open(path, "wb") as out:
        shutil.copyfileobj(src, out, CHUNK)
    os.chmod(path, 0o755 if mode & 0o111 else 0o644)


class _Plan:
    """Checked members of one archive, ready to write."""

    def __init__(self):
        self.dirs = []
        self.files = []      # (name, member, mode)
        self.links = []      # (name, target)
        self.hardlinks = []  # (name, target name)
        self.total = 0


def plan_tar(archive, strip=""):
    """Check every member of an open TarFile; return a _Plan. ``strip`` keeps only the
    members under that prefix and removes it from their names."""
    plan = _Plan()
    prefix = clean_member_name(strip, "path") if strip else ""
    for member in archive.getmembers():
        name = clean_member_name(member.name)
        if prefix:
            if name == prefix:
                continue
            if not name.startswith(prefix + "/"):
                continue
            name = name[len(prefix) + 1:]
        if not name:
            continue
        if member.isdir():
            plan.dirs.append(name)
        elif member.isfile():
            plan.files.append((name, member, member.mode))
            plan.total += member.size
        elif member.issym():
            check_link_target(name, member.linkname)
            plan.links.append((name, member.linkname))
        elif member.islnk():
            target = clean_member_name(member.linkname, "hard link target")
            if prefix:
                if not target.startswith(prefix + "/"):
                    raise UnsafeArchiveError(f"hard link {name!r} points outside {strip!r}", member=name)
                target = target[len(prefix) + 1:]
            plan.hardlinks.append((name, target))
        else:
            raise UnsafeArchiveError(f"archive member {name!r} is a device node or FIFO", member=name)
    return plan


def extract_tar(path, dest, strip="", whiteouts=False):
    """Unpack a tar archive (any compression tarfile reads) into ``dest`` after checking
    every member. With ``whiteouts`` (OCI layers), ``.wh.`` entries delete what earlier
    layers put there. Returns the number of bytes written."""
    try:
        archive = tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError) as exc:
        raise ArtifactError(f"{path} is not a readable tar archive: {exc}") from exc
    with archive:
        plan = plan_tar(archive, strip)
        _ensure_dirs(dest, plan.dirs)
        for name, member, mode in plan.files:
            base = posixpath.basename(name)
            if whiteouts and base.startswith(".wh."):
                _whiteout(dest, name)
                continue
            target = _target(dest, name)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            src = archive.extractfile(member)
            with src:
                _write_stream(src, target, mode)
        _finish_links(dest, plan)
    return plan.total


def _whiteout(dest, name):
    directory, base = posixpath.split(name)
    if base == ".wh..wh..opq":
        opaque = _target(dest, directory + "/x") if directory else None
        folder = os.path.dirname(opaque) if opaque else dest
        if os.path.isdir(folder):
            for entry in os.listdir(folder):
                _remove(os.path.join(folder, entry))
        return
    victim = _target(dest, posixpath.join(directory, base[len(".wh."):]))
    if os.path.lexists(victim):
        _remove(victim)


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _ensure_dirs(dest, dirs):
    for name in dirs:
        target = _target(dest, name)
        if os.path.lexists(target) and not os.path.isdir(target):
            raise UnsafeArchiveError(f"archive member {name!r} replaces a file or link with a directory",
                                     member=name)
        os.makedirs(target, exist_ok=True)
        os.chmod(target, 0o755)


def _finish_links(dest, plan):
    for name, target in plan.hardlinks:
        source = _target(dest, target)
        if not os.path.isfile(source) or os.path.islink(source):
            raise UnsafeArchiveError(f"hard link {name!r} points at {target!r}, which is not a file in the archive",
                                     member=name)
        path = _target(dest, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        shutil.copy2(source, path)
    for name, target in plan.links:
        path = _target(dest, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if os.path.isdir(path) and not os.path.islink(path):
            raise UnsafeArchiveError(f"link {name!r} would replace a directory of the archive", member=name)
        if os.path.lexists(path):
            os.unlink(path)
        os.symlink(target, path)
        if not _inside(dest, path):
            os.unlink(path)
            raise UnsafeArchiveError(f"link {name!r} resolves outside the destination", member=name)


def extract_zip(path, dest, strip=""):
    """Unpack a zip archive into ``dest`` after checking every member."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArtifactError(f"{path} is not a readable zip archive: {exc}") from exc
    prefix = clean_member_name(strip, "path") if strip else ""
    plan = _Plan()
    with archive:
        for info in archive.infolist():
            name = clean_member_name(info.filename)
            if prefix:
                if not name.startswith(prefix + "/"):
                    continue
                name = name[len(prefix) + 1:]
            if not name:
                continue
            mode = (info.external_attr >> 16) & 0xFFFF
            if info.is_dir() or stat.S_ISDIR(mode):
                plan.dirs.append(name)
            elif stat.S_ISLNK(mode):
                target = archive.read(info).decode("utf-8", "replace")
                check_link_target(name, target)
                plan.links.append((name, target))
            elif stat.S_IFMT(mode) and not stat.S_ISREG(mode):
                raise UnsafeArchiveError(f"archive member {name!r} is a device node or FIFO", member=name)
            else:
                plan.files.append((name, info, mode))
                plan.total += info.file_size
        _ensure_dirs(dest, plan.dirs)
        for name, info, mode in plan.files:
            target = _target(dest, name)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with archive.open(info) as src:
                _write_stream(src, target, mode)
        _finish_links(dest, plan)
    return plan.total


def unpacked_size(path, fmt):
    """Bytes an archive unpacks to (members' declared sizes)."""
    if fmt == "zip":
        with zipfile.ZipFile(path) as archive:
            return sum(i.file_size for i in archive.infolist())
    if fmt == "tar":
        with tarfile.open(path, "r:*") as archive:
            return sum(m.size for m in archive.getmembers() if m.isfile())
    return os.path.getsize(path)


def copy_tree_checked(src, dest):
    """Copy a directory tree refusing links that leave ``src``; regular files and dirs only."""
    src = os.path.realpath(src)
    for current, dirs, files in os.walk(src):
        rel = os.path.relpath(current, src)
        out_dir = dest if rel == "." else os.path.join(dest, rel)
        os.makedirs(out_dir, exist_ok=True)
        for name in list(dirs) + files:
            path = os.path.join(current, name)
            relname = os.path.relpath(path, src).replace(os.sep, "/")
            if os.path.islink(path):
                check_link_target(relname, os.readlink(path), "link")
                if not _inside(src, path):
                    raise UnsafeArchiveError(f"link {relname!r} resolves outside the source", member=relname)
                if name in dirs:
                    dirs.remove(name)
                os.symlink(os.readlink(path), os.path.join(out_dir, name))
            elif name in files:
                mode = os.stat(path).st_mode
                if not stat.S_ISREG(mode):
                    raise UnsafeArchiveError(f"{relname!r} is not a regular file", member=relname)
                with open(path, "rb") as handle:
                    _write_stream(handle, os.path.join(out_dir, name), mode)


def tree_listing(root, exclude=()):
    """Sorted ``[(relpath, kind, sha256-or-target, executable)]`` of a directory tree."""
    entries = []
    for current, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(dirs + files):
            path = os.path.join(current, name)
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            if rel in exclude:
                continue
            if os.path.islink(path):
                entries.append((rel, "link", os.readlink(path), False))
            elif os.path.isdir(path):
                continue
            else:
                executable = bool(os.stat(path).st_mode & 0o111)
                entries.append((rel, "file", sha256_file(path), executable))
    entries.sort()
    return entries


def tree_digest(root, exclude=()):
    """One sha256 over the names, kinds, contents and exec bits of a tree."""
    digest = hashlib.sha256()
    for rel, kind, value, executable in tree_listing(root, exclude):
        digest.update(f"{rel}\0{kind}\0{value}\0{int(executable)}\n".encode())
    return digest.hexdigest()
