# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the edgeai.fleet collection: not a public API, may change without notice.
"""Safe unpacking of tar and zip archives and content digests of directory trees.

Every member of an archive is checked before anything is written: absolute names, ``..``
components, absolute link targets, device nodes and FIFOs are refused with
UnsafeArchiveError. Members are written by this code (not by tarfile.extract) through
directory file descriptors opened with O_NOFOLLOW, component by component from the
destination down: a write, a mode change or a copy never goes through a symbolic link,
whatever put the link there (an earlier member, an earlier OCI layer). After each archive or
layer every link of the destination is resolved against the real tree, following chains of
links, and one that leaves it is refused. Caps on the bytes written (counted as written, so
sparse members count by their apparent size and a zip cannot lie about its sizes) and on the
number of members stop archive bombs. A truncated or corrupt archive is an ArtifactError."""

from __future__ import annotations

import bz2
import errno
import gzip
import hashlib
import os
import posixpath
import stat
import tarfile
import zipfile
import zlib

from ansible_collections.edgeai.fleet.plugins.module_utils._errors import ArtifactError, UnsafeArchiveError

try:  # some minimal Python builds lack _lzma
    import lzma
except ImportError:  # pragma: no cover - depends on the device's Python
    lzma = None

CHUNK = 1024 * 1024
MiB = 1024 * 1024
# Defaults of the module's max_unpacked_mb and max_members (see model_artifact's documentation).
DEFAULT_MAX_UNPACKED_MB = 8192
DEFAULT_MAX_MEMBERS = 20000
# A pax or GNU long-name header bigger than this is not a name: it is a memory bomb.
MAX_HEADER_BYTES = 1024 * 1024
MAX_TRAILER_BYTES = 16 * 1024 * 1024  # after the end-of-archive block (tar pads to 10 KiB)
MAX_DEPTH = 128       # path components of one member
MAX_LINK_HOPS = 40    # links followed resolving one link (the kernel's limit)
MAX_LINK_TARGET = 4096

# What reading a damaged archive may raise (tarfile, zipfile, gzip, bz2, lzma, zlib).
READ_ERRORS = (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError,
               NotImplementedError, RuntimeError) + ((lzma.LZMAError,) if lzma else ())

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | _O_CLOEXEC
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _O_CLOEXEC


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while True:
            block = handle.read(CHUNK)
            if not block:
                break
            digest.update(block)
    return digest.hexdigest()


_COMPRESSED = ((b"\x1f\x8b", "gzip", gzip.open), (b"BZh", "bzip2", bz2.open))
if lzma is not None:
    _COMPRESSED += ((b"\xfd7zXZ\x00", "xz", lzma.open),)


def detect_format(path):
    """``zip``, ``tar`` (plain or compressed) or ``file``. A compressed file that cannot be
    decompressed is an ArtifactError (a truncated or corrupt download), not a single file."""
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    try:
        if tarfile.is_tarfile(path):
            return "tar"
    except READ_ERRORS:
        pass
    for magic, kind, opener in _COMPRESSED:
        if head.startswith(magic):
            try:
                with opener(path, "rb") as stream:
                    stream.read(64 * 1024)
            except READ_ERRORS as exc:
                raise ArtifactError(f"{path} is {kind}-compressed but cannot be read ({_why(exc)}): truncated or "
                                    "corrupt; fetch it again (or set format: file to stage the bytes unchanged)"
                                    ) from None
    return "file"


def _why(exc):
    text = str(exc) or type(exc).__name__
    return text if len(text) < 200 else text[:200] + "..."


# -- limits ----------------------------------------------------------------------------
class Limits:
    """Caps on what one artifact unpacks to, shared by all its archives or layers.

    ``max_bytes`` counts bytes as they are written (regular files and hard-link copies);
    ``max_members`` counts the members taken (files, directories, links). None: no cap."""

    def __init__(self, max_bytes=None, max_members=None):
        self.max_bytes = max_bytes
        self.max_members = max_members
        self.bytes = 0
        self.members = 0

    @classmethod
    def from_mb(cls, max_unpacked_mb, max_members):
        return cls(max_unpacked_mb * MiB if max_unpacked_mb else None, max_members or None)

    def member(self, name):
        self.members += 1
        if self.max_members is not None and self.members > self.max_members:
            raise ArtifactError(
                f"the artifact has more than {self.max_members} members (refused at {name!r}): an archive bomb, or "
                "a model that genuinely needs more; then raise max_members", member=name,
                max_members=self.max_members)

    def declared(self, total, name):
        """Refuse before writing when the sizes the archive declares already exceed the cap."""
        if self.max_bytes is not None and self.bytes + total > self.max_bytes:
            raise self._too_big(name, self.bytes + total)

    def add(self, nbytes, name):
        self.bytes += nbytes
        if self.max_bytes is not None and self.bytes > self.max_bytes:
            raise self._too_big(name, self.bytes)

    def _too_big(self, name, size):
        return ArtifactError(
            f"the artifact unpacks to more than {self.max_bytes // MiB} MiB ({size} bytes or more, refused at "
            f"{name!r}): an archive bomb, or a model that genuinely needs more; then raise max_unpacked_mb",
            member=name, max_unpacked_bytes=self.max_bytes)


_NO_LIMITS = Limits()


# -- names and link targets ------------------------------------------------------------
def clean_member_name(name, what="archive member"):
    """Normalise a member name to a relative POSIX path; refuse absolute paths and ``..``."""
    raw = name
    if "\x00" in name:
        raise UnsafeArchiveError(f"{what} {raw!r} has a NUL byte in its name", member=raw)
    name = name.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"{what} {raw!r} has an absolute path", member=raw)
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"{what} {raw!r} contains '..'", member=raw)
    if len(parts) > MAX_DEPTH or any(len(p.encode("utf-8", "surrogateescape")) > 255 for p in parts):
        raise UnsafeArchiveError(f"{what} {raw[:120]!r}... has a path deeper than {MAX_DEPTH} folders or a name "
                                 "longer than 255 bytes", member=raw[:255])
    return "/".join(parts)


def check_link_target(name, target, what="archive member"):
    """First, lexical check of a symbolic link: refuse an empty or absolute target and one
    that climbs out of the destination from the link's folder. Links that only escape in
    combination (a chain) are caught by check_tree_links against the real tree."""
    if target.startswith("/") or not target or "\x00" in target or len(target) > MAX_LINK_TARGET:
        raise UnsafeArchiveError(f"{what} {name!r} links to {target[:200]!r} outside the destination",
                                 member=name)
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
    if resolved == ".." or resolved.startswith("../") or resolved.startswith("/"):
        raise UnsafeArchiveError(f"{what} {name!r} links to {target!r} outside the destination",
                                 member=name)
    return resolved


def _resolve_in_tree(root, start, target, hops=0):
    """Resolve ``target`` from the folder ``start`` (list of components below ``root``) the
    way the kernel would, following the links on disk. Returns the components of the
    result, or None when it leaves ``root``. Missing components are taken lexically (the
    link dangles; checked again after the next layer)."""
    if target.startswith("/"):
        return None
    parts = list(start)
    missing = False
    for comp in target.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if not parts:
                return None
            parts.pop()
            continue
        parts.append(comp)
        if missing:
            continue
        try:
            st = os.lstat(os.path.join(root, *parts))
        except (FileNotFoundError, NotADirectoryError):
            missing = True
            continue
        if stat.S_ISLNK(st.st_mode):
            if hops >= MAX_LINK_HOPS:
                raise UnsafeArchiveError("link {!r} is part of a loop of links".format("/".join(parts)),
                                         member="/".join(parts))
            here = os.path.join(root, *parts)
            parts.pop()
            parts = _resolve_in_tree(root, parts, os.readlink(here), hops + 1)
            if parts is None:
                return None
    return parts


def check_tree_links(root, what="link", where="the destination"):
    """Refuse the first symbolic link under ``root`` that resolves outside it, following
    chains of links as the kernel would."""
    for current, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(dirs + files):
            path = os.path.join(current, name)
            if not os.path.islink(path):
                continue
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            target = os.readlink(path)
            start = [] if os.path.dirname(rel) == "" else os.path.dirname(rel).split("/")
            if _resolve_in_tree(root, start, target) is None:
                raise UnsafeArchiveError(
                    f"{what} {rel!r} -> {target!r} resolves outside {where} (following the links on its way)",
                    member=rel)


# -- writing without following links ---------------------------------------------------
def _rmtree_at(parent_fd, name, depth=0):
    """Remove ``name`` (a folder) under ``parent_fd`` without following links."""
    fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    try:
        for entry in os.listdir(fd):
            st = os.stat(entry, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode) and depth < MAX_DEPTH * 2:
                _rmtree_at(fd, entry, depth + 1)
            else:
                os.unlink(entry, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent_fd)


def _lstat_at(parent_fd, name):
    try:
        return os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _check_parts(parts, member):
    # names come from clean_member_name; this guards the invariant where it matters
    if any(part in ("", ".", "..") or "/" in part for part in parts):
        raise UnsafeArchiveError(f"archive member {member!r} has an empty, '.' or '..' component", member=member)


def _split(name):
    parts = name.split("/")
    _check_parts(parts, name)
    return parts


class _Tree:
    """Writes below one root through directory file descriptors opened with O_NOFOLLOW, so no
    write, mode change or copy ever goes through a link, at any depth."""

    def __init__(self, root):
        self.root = root
        self.fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | _O_CLOEXEC)

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _dir(self, parts, member, create=True):
        """fd of the folder ``parts`` below the root; missing folders are made (when
        ``create``), a component that is a link or not a folder is refused. None when
        ``create`` is false and a folder is missing."""
        _check_parts(parts, member)
        fd = os.dup(self.fd)
        try:
            for index, part in enumerate(parts):
                try:
                    nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        os.close(fd)
                        return None
                    try:
                        os.mkdir(part, 0o755, dir_fd=fd)
                    except FileExistsError:
                        pass
                    nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                        raise
                    st = _lstat_at(fd, part)
                    kind = "a link" if st is not None and stat.S_ISLNK(st.st_mode) else "not a folder"
                    through = "/".join(parts[:index + 1])
                    raise UnsafeArchiveError(
                        f"archive member {member!r} is refused: its path runs through {through!r}, which is {kind} "
                        "(unpacking never writes through a link)", member=member) from None
                os.close(fd)
                fd = nxt
            return fd
        except BaseException:
            os.close(fd)
            raise

    def _clear(self, parent_fd, base, member, replace_dir):
        """Make room for a new entry ``base``: unlink a file or link (never following it)."""
        st = _lstat_at(parent_fd, base)
        if st is None:
            return
        if stat.S_ISDIR(st.st_mode):
            if not replace_dir:
                raise ArtifactError(f"archive member {member!r} would replace a folder with a file or link",
                                    member=member)
            _rmtree_at(parent_fd, base)
        else:
            os.unlink(base, dir_fd=parent_fd)

    def make_dir(self, name, replace=False):
        """Make the folder ``name`` (mode 0755). An existing file or link there is refused,
        or, with ``replace`` (a later OCI layer), removed (never followed)."""
        parts = _split(name)
        parent = self._dir(parts[:-1], name)
        try:
            st = _lstat_at(parent, parts[-1])
            if st is not None and not stat.S_ISDIR(st.st_mode):
                if not replace:
                    raise UnsafeArchiveError(f"archive member {name!r} replaces a file or link with a directory",
                                             member=name)
                os.unlink(parts[-1], dir_fd=parent)
                st = None
            if st is None:
                os.mkdir(parts[-1], 0o755, dir_fd=parent)
            fd = os.open(parts[-1], _DIR_FLAGS, dir_fd=parent)
            try:
                os.fchmod(fd, 0o755)
            finally:
                os.close(fd)
        finally:
            os.close(parent)

    def write_file(self, name, src, mode, limits, source, replace_dir=False):
        """Write the stream ``src`` as the regular file ``name``; bytes count against
        ``limits`` as they are written. Read errors are a truncated or corrupt ``source``."""
        parts = _split(name)
        parent = self._dir(parts[:-1], name)
        try:
            self._clear(parent, parts[-1], name, replace_dir)
            fd = os.open(parts[-1], _WRITE_FLAGS, 0o600, dir_fd=parent)
            with os.fdopen(fd, "wb") as out:
                while True:
                    try:
                        block = src.read(CHUNK)
                    except READ_ERRORS as exc:
                        raise ArtifactError(f"{source} is truncated or corrupt: reading {name!r} failed: {_why(exc)}",
                                            member=name) from None
                    if not block:
                        break
                    limits.add(len(block), name)
                    out.write(block)
                os.fchmod(out.fileno(), 0o755 if mode & 0o111 else 0o644)
        finally:
            os.close(parent)

    def open_file(self, name, member):
        """Open the regular file ``name`` for reading, refusing links on the way and at the
        end. Returns (file object, mode) or None when it does not exist."""
        parts = _split(name)
        parent = self._dir(parts[:-1], member, create=False)
        if parent is None:
            return None
        try:
            fd = os.open(parts[-1], _READ_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EMLINK):
                return False
            raise
        finally:
            os.close(parent)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            return False
        return os.fdopen(fd, "rb"), st.st_mode

    def make_link(self, name, target):
        parts = _split(name)
        parent = self._dir(parts[:-1], name)
        try:
            st = _lstat_at(parent, parts[-1])
            if st is not None and stat.S_ISDIR(st.st_mode):
                raise UnsafeArchiveError(f"link {name!r} would replace a directory of the archive", member=name)
            if st is not None:
                os.unlink(parts[-1], dir_fd=parent)
            os.symlink(target, parts[-1], dir_fd=parent)
        finally:
            os.close(parent)

    def remove(self, name):
        """Remove ``name`` (file, link or folder) if present; never follows a link."""
        parts = _split(name)
        parent = self._dir(parts[:-1], name, create=False)
        if parent is None:
            return
        try:
            st = _lstat_at(parent, parts[-1])
            if st is None:
                return
            if stat.S_ISDIR(st.st_mode):
                _rmtree_at(parent, parts[-1])
            else:
                os.unlink(parts[-1], dir_fd=parent)
        finally:
            os.close(parent)

    def empty(self, name):
        """Remove what is inside the folder ``name`` ('' for the root): an opaque whiteout."""
        parts = name.split("/") if name else []
        fd = self._dir(parts, name + "/.wh..wh..opq", create=False)
        if fd is None:
            return
        try:
            for entry in os.listdir(fd):
                st = os.stat(entry, dir_fd=fd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    _rmtree_at(fd, entry)
                else:
                    os.unlink(entry, dir_fd=fd)
        finally:
            os.close(fd)


# -- planning --------------------------------------------------------------------------
class _Plan:
    """Checked members of one archive, ready to write."""

    def __init__(self):
        self.whiteouts = []  # names of .wh. entries (OCI layers)
        self.dirs = []
        self.files = []      # (name, member, mode)
        self.links = []      # (name, target)
        self.hardlinks = []  # (name, target name)
        self.total = 0       # declared bytes of the regular files (apparent size for sparse ones)


def _strip(name, prefix):
    if not prefix:
        return name
    if name == prefix or not name.startswith(prefix + "/"):
        return ""
    return name[len(prefix) + 1:]


class _TarInfo(tarfile.TarInfo):
    """Refuses pax and GNU long-name headers too big to be names before tarfile reads them
    into memory."""

    def _proc_gnulong(self, tarfile):  # pylint: disable=redefined-outer-name
        self._check_header_size()
        return super()._proc_gnulong(tarfile)

    def _proc_pax(self, tarfile):  # pylint: disable=redefined-outer-name
        self._check_header_size()
        return super()._proc_pax(tarfile)

    def _check_header_size(self):
        if self.size > MAX_HEADER_BYTES:
            raise ArtifactError(f"tar extended header of {self.size} bytes (more than {MAX_HEADER_BYTES}): "
                                "refused as an archive bomb")


def _tar_members(archive, source):
    """The members of an open TarFile, one at a time, without keeping them all in memory;
    a damaged archive, or one that ends without its end-of-archive block, is refused."""
    while True:
        try:
            member = archive.next()
        except READ_ERRORS as exc:
            raise ArtifactError(f"{source} is truncated or corrupt: {_why(exc)}") from None
        if member is None:
            break
        # the plan keeps the members it takes; a tar of a million headers stays small in memory
        archive.members = []
        yield member
    try:
        archive.fileobj.seek(archive.offset)
        block = archive.fileobj.read(tarfile.BLOCKSIZE)
    except READ_ERRORS as exc:
        raise ArtifactError(f"{source} is truncated or corrupt: {_why(exc)}") from None
    if len(block) != tarfile.BLOCKSIZE or block.count(b"\0") != tarfile.BLOCKSIZE:
        raise ArtifactError(f"{source} is truncated or corrupt: it ends at byte {archive.offset} of its tar stream "
                            "without the end-of-archive block (an interrupted copy?)")
    # Read the compressed stream to its end: gzip, bzip2 and xz check their CRC there, so
    # damaged data in a member is found before anything is written.
    drained = 0
    while True:
        try:
            block = archive.fileobj.read(CHUNK)
        except READ_ERRORS as exc:
            raise ArtifactError(f"{source} is truncated or corrupt: {_why(exc)}") from None
        if not block:
            break
        drained += len(block)
        if drained > MAX_TRAILER_BYTES:
            raise ArtifactError(f"{source} holds more than {MAX_TRAILER_BYTES // MiB} MiB after the end of its tar "
                                "archive: refused (not a tar archive as tar writes them)")


def _hides_prefix(name, prefix):
    """Whether the whiteout ``name`` (outside ``prefix``) removes the prefix folder itself or
    one of its parents, hiding all that earlier layers put there."""
    directory, base = posixpath.split(name)
    if base == ".wh..wh..opq":
        hidden = directory
    elif base.startswith(".wh."):
        hidden = posixpath.join(directory, base[len(".wh."):])
    else:
        return False
    return hidden == "" or prefix == hidden or prefix.startswith(hidden + "/")


def plan_tar(archive, strip="", limits=None, source="the archive", whiteouts=False):
    """Check every member of an open TarFile; return a _Plan. ``strip`` keeps only the
    members under that prefix and removes it from their names."""
    limits = limits or _NO_LIMITS
    plan = _Plan()
    prefix = clean_member_name(strip, "path") if strip else ""
    for member in _tar_members(archive, source):
        full = clean_member_name(member.name)
        name = _strip(full, prefix)
        if not name:
            if whiteouts and prefix and member.isfile() and _hides_prefix(full, prefix):
                plan.whiteouts.append(".wh..wh..opq")  # empty the whole root
            continue
        limits.member(name)
        if member.isdir():
            plan.dirs.append(name)
        elif member.isfile():
            plan.files.append((name, member, member.mode))
            plan.total += max(0, member.size)
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


def _split_whiteouts(plan, whiteouts):
    if not whiteouts:
        return
    kept = []
    for entry in plan.files:
        base = posixpath.basename(entry[0])
        if base.startswith(".wh."):
            if base != ".wh..wh..opq" and base[len(".wh."):] in ("", ".", ".."):
                raise UnsafeArchiveError(f"whiteout {entry[0]!r} would remove {base[len('.wh.'):]!r}: a whiteout may "
                                         "not name '', '.' or '..'", member=entry[0])
            plan.whiteouts.append(entry[0])
            plan.total -= max(0, entry[1].size)
        else:
            kept.append(entry)
    plan.files = kept


def _apply_whiteouts(tree, plan):
    # whiteouts act on the earlier layers only: before anything of this layer is written
    for name in plan.whiteouts:
        directory, base = posixpath.split(name)
        if base == ".wh..wh..opq":
            tree.empty(directory)
        else:
            tree.remove(posixpath.join(directory, base[len(".wh."):]))


def _finish_links(tree, plan, limits, source):
    for name, target in plan.hardlinks:
        opened = tree.open_file(target, name)
        if not opened:
            raise UnsafeArchiveError(f"hard link {name!r} points at {target!r}, which is not a file in the archive",
                                     member=name)
        handle, mode = opened
        with handle:
            tree.write_file(name, handle, mode, limits, source)
    for name, target in plan.links:
        tree.make_link(name, target)


def _write_plan(plan, dest, open_member, limits, space_check, label, whiteouts=False):
    """Write a checked plan (of a tar or zip archive) into ``dest``: the declared size against
    ``limits`` and ``space_check`` first, then whiteouts, folders, files (``open_member`` opens
    one), hard and symbolic links; last, the links of the whole tree are checked. Returns the
    declared bytes."""
    limits.declared(plan.total, plan.files[-1][0] if plan.files else label)
    if space_check is not None:
        space_check(plan.total)
    with _Tree(dest) as tree:
        _apply_whiteouts(tree, plan)
        for name in plan.dirs:
            tree.make_dir(name, replace=whiteouts)
        for name, member, mode in plan.files:
            try:
                src = open_member(member)
            except READ_ERRORS as exc:
                raise ArtifactError(f"{label} is truncated or corrupt: {_why(exc)}", member=name) from None
            with src:
                tree.write_file(name, src, mode, limits, label, replace_dir=whiteouts)
        _finish_links(tree, plan, limits, label)
    check_tree_links(dest, where=f"the destination after {label}")
    return plan.total


def extract_tar(path, dest, strip="", whiteouts=False, limits=None, space_check=None, label=None):
    """Unpack a tar archive (any compression tarfile reads) into ``dest`` after checking
    every member. With ``whiteouts`` (OCI layers), ``.wh.`` entries delete what earlier
    layers put there, and a file may replace a folder of an earlier layer. ``limits`` caps
    bytes and members (shared across the layers of one image); ``space_check(bytes)`` is
    called with the declared size before anything is written; ``label`` names the archive
    in errors (default: its path). Returns the declared bytes."""
    limits = limits or _NO_LIMITS
    label = label or path
    try:
        archive = tarfile.open(path, "r:*", tarinfo=_TarInfo)
    except READ_ERRORS as exc:
        raise ArtifactError(f"{label} is not a readable tar archive (truncated or corrupt?): {_why(exc)}") from None
    with archive:
        plan = plan_tar(archive, strip, limits, label, whiteouts)
        _split_whiteouts(plan, whiteouts)
        return _write_plan(plan, dest, archive.extractfile, limits, space_check, label, whiteouts)


def extract_zip(path, dest, strip="", limits=None, space_check=None):
    """Unpack a zip archive into ``dest`` after checking every member. Bytes are counted as
    they are decompressed, whatever the headers say."""
    limits = limits or _NO_LIMITS
    try:
        archive = zipfile.ZipFile(path)
    except READ_ERRORS as exc:
        raise ArtifactError(f"{path} is not a readable zip archive (truncated or corrupt?): {_why(exc)}") from None
    prefix = clean_member_name(strip, "path") if strip else ""
    plan = _Plan()
    with archive:
        for info in archive.infolist():
            name = _strip(clean_member_name(info.filename), prefix)
            if not name:
                continue
            limits.member(name)
            if info.flag_bits & 0x1:
                raise ArtifactError(f"zip member {name!r} is encrypted; give an unencrypted archive", member=name)
            mode = (info.external_attr >> 16) & 0xFFFF
            if info.is_dir() or stat.S_ISDIR(mode):
                plan.dirs.append(name)
            elif stat.S_ISLNK(mode):
                try:
                    with archive.open(info) as handle:
                        raw = handle.read(MAX_LINK_TARGET + 1)
                except READ_ERRORS as exc:
                    raise ArtifactError(f"{path} is truncated or corrupt: reading {name!r} failed: {_why(exc)}",
                                        member=name) from None
                target = raw.decode("utf-8", "replace")
                check_link_target(name, target)
                plan.links.append((name, target))
            elif stat.S_IFMT(mode) and not stat.S_ISREG(mode):
                raise UnsafeArchiveError(f"archive member {name!r} is a device node or FIFO", member=name)
            else:
                plan.files.append((name, info, mode))
                plan.total += info.file_size
        return _write_plan(plan, dest, archive.open, limits, space_check, path)


def copy_tree_checked(src, dest, limits=None):
    """Copy a directory tree: regular files, folders and links that resolve inside ``src``
    (following chains); anything else is refused. Nothing is written through a link."""
    limits = limits or _NO_LIMITS
    src = os.path.realpath(src)
    check_tree_links(src, "link", "the source")
    os.makedirs(dest, exist_ok=True)
    with _Tree(dest) as tree:
        for current, dirs, files in os.walk(src):
            dirs.sort()
            for name in sorted(dirs + files):
                path = os.path.join(current, name)
                relname = os.path.relpath(path, src).replace(os.sep, "/")
                st = os.lstat(path)
                if stat.S_ISLNK(st.st_mode):
                    target = os.readlink(path)
                    check_link_target(relname, target, "link")
                    if name in dirs:
                        dirs.remove(name)
                    limits.member(relname)
                    tree.make_link(relname, target)
                elif stat.S_ISDIR(st.st_mode):
                    limits.member(relname)
                    tree.make_dir(relname)
                elif stat.S_ISREG(st.st_mode):
                    limits.member(relname)
                    fd = os.open(path, _READ_FLAGS)
                    with os.fdopen(fd, "rb") as handle:
                        mode = os.fstat(handle.fileno()).st_mode
                        if not stat.S_ISREG(mode):
                            raise UnsafeArchiveError(f"{relname!r} is not a regular file", member=relname)
                        tree.write_file(relname, handle, mode, limits, src)
                else:
                    raise UnsafeArchiveError(f"{relname!r} is not a regular file", member=relname)
    check_tree_links(dest, "link", "the copy")


def tree_listing(root, exclude=()):
    """Sorted ``[(relpath, kind, sha256-or-target, executable)]`` of a directory tree.
    Anything but regular files, folders and links (a FIFO, a device) is refused."""
    entries = []
    for current, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(dirs + files):
            path = os.path.join(current, name)
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            if rel in exclude:
                continue
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                entries.append((rel, "link", os.readlink(path), False))
            elif stat.S_ISDIR(st.st_mode):
                continue
            elif stat.S_ISREG(st.st_mode):
                executable = bool(st.st_mode & 0o111)
                entries.append((rel, "file", sha256_file(path), executable))
            else:
                raise UnsafeArchiveError(f"{rel!r} in {root} is not a regular file, a folder or a link", member=rel)
    entries.sort()
    return entries


def tree_digest(root, exclude=()):
    """One sha256 over the names, kinds, contents and exec bits of a tree."""
    digest = hashlib.sha256()
    for rel, kind, value, executable in tree_listing(root, exclude):
        digest.update(f"{rel}\0{kind}\0{value}\0{int(executable)}\n".encode())
    return digest.hexdigest()
