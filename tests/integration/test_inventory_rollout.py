# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The device_registry inventory with real ansible-playbook runs: `serial` batches follow the
rollout order (canaries first, then one device per site per batch), and the lab's generated
registry gives the same hosts and variables as the lab's static inventory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PLUGIN = 'edgeai.fleet.device_registry'


def _env() -> dict:
    env = dict(os.environ)
    env.update({'ANSIBLE_CONFIG': str(REPO / 'ansible.cfg'), 'ANSIBLE_NOCOLOR': '1',
                'ANSIBLE_INVENTORY_UNPARSED_FAILED': 'true'})
    return env


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*args], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300, check=False)


def test_serial_batches_follow_the_rollout_order(tmp_path):
    devices = [{'id': f'{site}-canary', 'site': site, 'platform': 'jetson', 'hardware': 'agx-orin',
                'address': '127.0.0.1', 'ring': 'canary'} for site in ('site-b', 'site-a')]
    for site in ('site-d', 'site-c', 'site-b', 'site-a'):
        for i in range(5):
            devices.append({'id': f'{site}-dev-{i}', 'site': site, 'platform': 'coral', 'hardware': f'hw-{i % 2}',
                            'address': f'{site}-{i}.example.com'})
    (tmp_path / 'devices.yml').write_text(yaml.safe_dump({'devices': devices}))
    config = tmp_path / 'fleet.device_registry.yml'
    config.write_text(f'plugin: {PLUGIN}\nsource_file: devices.yml\n')
    playbook = tmp_path / 'batches.yml'
    playbook.write_text(yaml.safe_dump([{
        'name': 'Roll out in batches',
        'hosts': 'all',
        'gather_facts': False,
        'serial': [2, 4],
        'tasks': [{'name': 'Show the batch', 'run_once': True,
                   'ansible.builtin.debug': {'msg': "BATCH {{ ansible_play_batch | join(',') }}"}}],
    }], sort_keys=False))

    proc = _run(str(BIN / 'ansible-playbook'), '-i', str(config), str(playbook))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    batches = [line.split('BATCH ', 1)[1].strip().strip('"').split(',')
               for line in proc.stdout.splitlines() if 'BATCH ' in line]
    assert batches[0] == ['site-a-canary', 'site-b-canary']
    assert len(batches) == 1 + 5
    for batch in batches[1:]:
        sites = [h.rsplit('-dev-', 1)[0] for h in batch]
        assert sorted(sites) == ['site-a', 'site-b', 'site-c', 'site-d'], batch  # one device of every site


@pytest.mark.lab
def test_lab_registry_matches_the_lab_static_inventory():
    lab_inventory = REPO / '.lab' / 'inventory'
    config = lab_inventory / 'lab.device_registry.yml'
    static = lab_inventory / 'hosts.yml'
    assert config.exists() and static.exists(), 'the lab is not up: run `tests/lab/lab up` first'

    plugin = _run(str(BIN / 'ansible-inventory'), '-i', str(config), '--list', '--export')
    assert plugin.returncode == 0, plugin.stderr
    baseline = _run(str(BIN / 'ansible-inventory'), '-i', str(static), '--list')
    assert baseline.returncode == 0, baseline.stderr
    ours = _plain(json.loads(plugin.stdout))
    theirs = _plain(json.loads(baseline.stdout))

    assert set(ours['_meta']['hostvars']) == set(theirs['_meta']['hostvars'])
    for host, expected in theirs['_meta']['hostvars'].items():
        got = ours['_meta']['hostvars'][host]
        for key in ('ansible_host', 'ansible_port', 'edge_site', 'edge_platform', 'edge_hardware', 'edge_ring',
                    'edge_labels', 'edge_maintenance', 'edge_device_root'):
            if key in expected:
                assert got.get(key) == expected[key], (host, key)
    for group in (g for g in theirs if g.startswith(('site_', 'platform_', 'hardware_', 'ring_'))):
        assert set(ours[group]['hosts']) == set(theirs[group]['hosts']), group


def _plain(value):
    """Drop the CLI's untrusted-value markers so values compare as plain data."""
    if isinstance(value, dict):
        if set(value) == {'__ansible_unsafe'}:
            return value['__ansible_unsafe']
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
