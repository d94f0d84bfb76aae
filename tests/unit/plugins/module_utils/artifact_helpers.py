# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helpers of the tests that run model_artifact's engine (test_artifact.py, test_archive_hostile.py,
test_credentials_hostile.py): its parameters with the module's defaults, a disk that always has
room, tarballs made in memory, sha256."""

from __future__ import annotations

import hashlib
import io
import tarfile

from ansible_collections.edgeai.fleet.plugins.module_utils._artifact import ARGUMENT_SPEC


def params(tmp_path, **kw):
    """model_artifact's parameters: every default of its argument spec, model scale version 1
    staged under tmp_path/artifacts, then kw."""
    base = dict((k, v.get("default")) for k, v in ARGUMENT_SPEC.items())
    base.update(name="scale", version=1, dest=str(tmp_path / "artifacts"))
    base.update(kw)
    return base


def plenty(path):
    """statvfs_free for a disk that always has room (10 TB)."""
    return 10 ** 13


def tar_bytes(files, wrap=None):
    """A .tgz of files (name -> str or bytes), under the folder wrap when given."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as archive:
        for name, data in files.items():
            data = data.encode() if isinstance(data, str) else data
            info = tarfile.TarInfo(f"{wrap}/{name}" if wrap else name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def sha(data):
    return hashlib.sha256(data).hexdigest()
