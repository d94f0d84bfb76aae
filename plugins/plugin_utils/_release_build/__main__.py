# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""python -m ansible_collections.edgeai.fleet.plugins.plugin_utils._release_build"""

from __future__ import annotations

import sys

from ansible_collections.edgeai.fleet.plugins.plugin_utils._release_build._cli import main

if __name__ == "__main__":  # importing it (sanity tests, docs tools) runs nothing
    sys.exit(main())
