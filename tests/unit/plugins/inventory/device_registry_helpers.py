# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared helpers of the device_registry inventory plugin tests (imported by the conftest and
the test modules; a unique module name, since several test folders have a conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[4]
PLUGIN = 'edgeai.fleet.device_registry'
TOKEN = 'test-token-4f1c9a'


def device(i: int, site: str = 'site-a', **fields) -> dict:
    record = {
        'id': f'{site}-dev-{i:02d}',
        'site': site,
        'platform': 'jetson',
        'hardware': 'agx-orin',
        'address': f'10.0.{ord(site[-1]) % 256}.{i}',
    }
    record.update(fields)
    return record


def ansible_env(collections_dir: Path, extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env.update({
        'ANSIBLE_CONFIG': str(REPO / 'ansible.cfg'),
        'ANSIBLE_COLLECTIONS_PATH': str(collections_dir),
        'ANSIBLE_INVENTORY_ENABLED': PLUGIN,
        'ANSIBLE_INVENTORY_UNPARSED_FAILED': 'true',
        'ANSIBLE_NOCOLOR': '1',
        'ANSIBLE_FORCE_COLOR': '0',
    })
    env.pop('EDGEAI_REGISTRY_TOKEN', None)
    env.update(extra or {})
    return env
