# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the edgeai.fleet collection: not a public API, may change without notice.
"""How a staged model version is laid out on a device, for every module that reads it. Small on
purpose: the preflight module needs it without the staging engine."""

from __future__ import annotations

import os

# <dest>/<model>/<version>/ holds the version's files plus these
MANIFEST = ".edgeai-artifact.json"
CONFIG = "config.pbtxt"
# A smoke test made by the release builder: inputs and expected outputs, next to config.pbtxt.
SMOKE = "smoke_test.json"


def staged_versions(model_dir):
    """The numbered version folders under ``model_dir``, sorted."""
    try:
        names = os.listdir(model_dir)
    except OSError:
        return []
    return sorted(int(n) for n in names if n.isdigit() and os.path.isdir(os.path.join(model_dir, n)))
