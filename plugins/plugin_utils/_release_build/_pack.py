# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the edgeai.fleet collection: not a public API, may change without notice.
"""The artifact: Triton's model layout in a reproducible tar.gz.

    <name>/config.pbtxt
    <name>/smoke_test.json
    <name>/<version>/model.tflite | model.onnx (+ external data) | model.plan | model.py ...

Equal inputs give equal bytes: members sorted by path, mtime 0, uid/gid 0 with empty owner
names, modes 0755 (folders and executables) or 0644, PAX format, and a gzip header without a
file name and with mtime 0 (as scripts/demo-release does)."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tarfile
import tempfile

from ansible_collections.edgeai.fleet.plugins.plugin_utils._release_build._common import BuildError

CONFIG = "config.pbtxt"
SMOKE = "smoke_test.json"


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def stage(root, name, version, config_text, smoke_bytes, files):
    """Lay the model out under ``root``; return the model folder ``root/<name>``."""
    model_dir = os.path.join(root, name)
    version_dir = os.path.join(model_dir, str(version))
    os.makedirs(version_dir)
    with open(os.path.join(model_dir, CONFIG), "w", encoding="utf-8") as handle:
        handle.write(config_text)
    if smoke_bytes is not None:
        with open(os.path.join(model_dir, SMOKE), "wb") as handle:
            handle.write(smoke_bytes)
    for source, rel in files:
        dest = os.path.join(version_dir, *rel.split("/"))
        if os.path.exists(dest):
            raise BuildError(f"two files of the model would both be {rel} in the version folder")
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copyfile(source, dest)
        mode = os.stat(source).st_mode
        os.chmod(dest, 0o755 if mode & 0o111 else 0o644)
    return model_dir


def _members(model_dir, prefix):
    base = os.path.dirname(model_dir)
    paths = [model_dir]
    for dirpath, dirnames, filenames in os.walk(model_dir):
        dirnames.sort()
        paths += [os.path.join(dirpath, d) for d in dirnames]
        paths += [os.path.join(dirpath, f) for f in filenames]
    for path in sorted(paths, key=lambda p: os.path.relpath(p, base).replace(os.sep, "/")):
        yield path, prefix + os.path.relpath(path, base).replace(os.sep, "/")


def write_tarball(model_dir, dest, prefix=""):
    """Pack ``model_dir`` as ``<prefix><name>/...`` into ``dest``; return its sha256."""
    with open(dest, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
            with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for path, arcname in _members(model_dir, prefix):
                    info = tar.gettarinfo(path, arcname=arcname)
                    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                    if info.isdir():
                        info.mode = 0o755
                        tar.addfile(info)
                    elif info.isfile():
                        info.mode = 0o755 if info.mode & 0o111 else 0o644
                        with open(path, "rb") as handle:
                            tar.addfile(info, handle)
                    else:
                        raise BuildError(f"{path} is neither a file nor a folder; it cannot go into the artifact")
    return sha256_file(dest)


def same_file(a, b):
    """Whether files ``a`` and ``b`` hold the same bytes (``b`` may be missing)."""
    if not os.path.isfile(b) or os.path.getsize(a) != os.path.getsize(b):
        return False
    return sha256_file(a) == sha256_file(b)


def install(tmp, dest):
    """Move ``tmp`` to ``dest`` unless ``dest`` holds the same bytes; return whether it changed."""
    if same_file(tmp, dest):
        os.unlink(tmp)
        return False
    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    os.chmod(tmp, 0o644)
    os.replace(tmp, dest)
    return True


def write_text_file(dest, text, check_mode=False):
    """Write ``text`` to ``dest`` atomically when it differs; return whether it changed."""
    try:
        with open(dest, encoding="utf-8") as handle:
            if handle.read() == text:
                return False
    except (OSError, UnicodeDecodeError):
        pass
    if check_mode:
        return True
    directory = os.path.dirname(os.path.abspath(dest))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, dest)
    return True
