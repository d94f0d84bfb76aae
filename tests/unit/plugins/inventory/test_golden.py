# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Golden files: `ansible-inventory -i <config> --list` (the real CLI) compared as JSON with
tests/unit/plugins/inventory/golden/*.json. Regenerate after an intended change with
`EDGEAI_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/plugins/inventory/test_golden.py` and
review the diff."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from device_registry_helpers import PLUGIN, REPO, TOKEN

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / 'fixtures'
GOLDEN = HERE / 'golden'
UPDATE = os.environ.get('EDGEAI_UPDATE_GOLDEN') == '1'

CASES = {
    'example': REPO / 'inventories' / 'example' / 'fleet.device_registry.yml',
    'plain': FIXTURES / 'plain.device_registry.yml',
    'filters': FIXTURES / 'filters.device_registry.yml',
    'prefix': FIXTURES / 'prefix.device_registry.yaml',
}


def check_golden(name: str, output: str) -> None:
    actual = json.loads(output)
    path = GOLDEN / f'{name}.json'
    if UPDATE:
        path.write_text(json.dumps(actual, indent=2, sort_keys=True) + '\n')
    expected = json.loads(path.read_text())
    assert actual == expected


def list_order(inventory_json: dict, group: str) -> list[str]:
    return inventory_json[group]['hosts']


@pytest.mark.parametrize('name', sorted(CASES))
def test_list_matches_golden(ansible_inventory, name):
    proc = ansible_inventory('-i', str(CASES[name]), '--list')
    assert proc.returncode == 0, proc.stderr
    assert '[WARNING]' not in proc.stderr, proc.stderr
    check_golden(name, proc.stdout)


def test_api_source_gives_the_same_inventory_as_the_file(ansible_inventory, registry_api, tmp_path):
    doc = json.loads((FIXTURES / 'devices.json').read_text())
    registry_api.state.devices = doc['devices']
    registry_api.state.sites = doc['sites']
    config = tmp_path / 'api.device_registry.yml'
    config.write_text(yaml.safe_dump({'plugin': PLUGIN, 'api_url': registry_api.url, 'api_page_size': 4,
                                      'allow_ansible_vars': ['ansible_ssh_private_key_file']}))
    proc = ansible_inventory('-i', str(config), '--list',
                             env={'EDGEAI_REGISTRY_TOKEN': TOKEN, 'EDGEAI_REGISTRY_CA_PATH': str(registry_api.ca_path)})
    assert proc.returncode == 0, proc.stderr
    assert TOKEN not in proc.stdout + proc.stderr
    assert len([r for r in registry_api.state.requests if r['path'].startswith('/api/devices')]) == 3
    check_golden('plain', proc.stdout)


def test_golden_values_are_marked_unsafe():
    """The CLI marks untrusted strings; registry strings must come out that way."""
    hostvars = json.loads((GOLDEN / 'plain.json').read_text())['_meta']['hostvars']
    assert hostvars['lab-1-orin-01']['edge_site'] == {'__ansible_unsafe': 'lab-1'}
    assert hostvars['lab-1-orin-01']['edge_rollout_order'] == 1


def test_list_hosts_follows_the_rollout_order(collections_dir):
    """`ansible all --list-hosts` (and so serial batches) walks hosts in rollout order."""
    import subprocess
    import sys

    from device_registry_helpers import ansible_env

    proc = subprocess.run(
        [str(Path(sys.executable).parent / 'ansible'), 'all', '-i', str(CASES['plain']), '--list-hosts'],
        cwd=REPO, env=ansible_env(collections_dir), capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    listed = [line.strip() for line in proc.stdout.splitlines()[1:]]
    hostvars = json.loads((GOLDEN / 'plain.json').read_text())['_meta']['hostvars']
    assert listed == sorted(hostvars, key=lambda h: hostvars[h]['edge_rollout_order'])
    assert listed[:3] == ['lab-1-orin-01', 'lab-2-xnx-01', 'lab-1-nano-01']  # canary, canary, early


def test_example_graph_is_documented(ansible_inventory):
    """docs/inventory.md shows the --graph of inventories/example as it is now."""
    proc = ansible_inventory('-i', 'inventories/example/fleet.device_registry.yml', '--graph')
    assert proc.returncode == 0, proc.stderr
    docs = (REPO / 'docs' / 'inventory.md').read_text()
    assert proc.stdout.strip() in docs
