#!/usr/bin/env python3
# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Time `ansible all -i <source> --list-hosts` for the device_registry inventory plugin
against ansible's own yaml inventory plugin reading the same hosts as a static file.

For each fleet size it writes a device registry file (YAML and JSON), a
`fleet.device_registry.yml` config and the equivalent static YAML inventory (same hosts,
same host variables, same groups), runs each source `--repeat` times and prints a markdown
table of the best wall-clock times. Run it from the collection root (where ansible.cfg is):

    .venv/bin/python benchmarks/inventory/bench.py --sizes 1000,10000,50000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import yaml

try:
    _Dumper = yaml.CSafeDumper
except AttributeError:  # pragma: no cover
    _Dumper = yaml.SafeDumper

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# the repository's ansible.cfg enables the plugin and finds edgeai.fleet in ./.collections
ENV = dict(os.environ, ANSIBLE_CONFIG=os.environ.get('ANSIBLE_CONFIG') or os.path.join(REPO, 'ansible.cfg'))

HARDWARE = (
    ('jetson', 'agx-orin'),
    ('jetson', 'orin-nano'),
    ('jetson', 'xavier-nx'),
    ('jetson', 'jetson-nano'),
    ('coral', 'coral-dev-board'),
    ('coral', 'coral-usb'),
    ('generic', 'generic'),
)
RINGS = ('canary',) + ('early',) * 4 + ('broad',) * 45  # 2% canary, 8% early, 90% broad


def fleet(size: int, sites: int) -> list[dict]:
    devices = []
    for i in range(size):
        site = f'site-{i % sites:03d}'
        plat, hw = HARDWARE[i % len(HARDWARE)]
        n = i // sites
        devices.append({
            'id': f'{site}-{hw}-{n:05d}',
            'site': site,
            'platform': plat,
            'hardware': hw,
            'address': f'10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}',
            'port': 22,
            'user': 'edge',
            'ring': RINGS[i % len(RINGS)],
            'labels': {'line': 'ab'[i % 2], 'customer': f'c{i % 7}'},
            'maintenance': False,
        })
    return devices


def sanitize(name: str) -> str:
    return ''.join(c if c.isalnum() or c == '_' else '_' for c in name)


def static_inventory(devices: list[dict]) -> dict:
    """The hosts, variables and groups the plugin makes, as a yaml-inventory document."""
    ring_rank = {'canary': 0, 'early': 1, 'broad': 2}
    rings: dict = {}
    for d in devices:
        rings.setdefault(d['ring'], {}).setdefault(d['site'], []).append(d)
    ordered = []
    for ring in sorted(rings, key=lambda r: (ring_rank.get(r, 3), r)):
        per_site = [sorted(rings[ring][s], key=lambda d: d['id']) for s in sorted(rings[ring])]
        for i in range(max(len(s) for s in per_site)):
            ordered.extend(s[i] for s in per_site if i < len(s))
    hosts = {}
    children: dict = {}
    for order, d in enumerate(ordered, start=1):
        hosts[d['id']] = {
            'ansible_host': d['address'],
            'ansible_port': d['port'],
            'ansible_user': d['user'],
            'edge_site': d['site'],
            'edge_platform': d['platform'],
            'edge_hardware': d['hardware'],
            'edge_ring': d['ring'],
            'edge_labels': d['labels'],
            'edge_maintenance': d['maintenance'],
            'edge_rollout_order': order,
        }
        for kind in ('site', 'platform', 'hardware', 'ring'):
            group = sanitize(f"{kind}_{d[kind]}")
            children.setdefault(group, {'hosts': {}})['hosts'][d['id']] = None
    return {'all': {'hosts': hosts, 'children': children}}


def write_sources(directory: str, size: int, sites: int) -> dict[str, str]:
    devices = fleet(size, sites)
    paths = {}
    with open(os.path.join(directory, 'devices.yml'), 'w') as f:
        yaml.dump({'devices': devices}, f, Dumper=_Dumper, sort_keys=False)
    with open(os.path.join(directory, 'devices.json'), 'w') as f:
        json.dump({'devices': devices}, f)
    for kind, source in (('yaml', 'devices.yml'), ('json', 'devices.json')):
        path = os.path.join(directory, f'{kind}.device_registry.yml')
        with open(path, 'w') as f:
            f.write(f'plugin: edgeai.fleet.device_registry\nsource_file: {source}\n')
        paths[f'plugin_{kind}'] = path
    path = os.path.join(directory, 'static.yml')
    with open(path, 'w') as f:
        yaml.dump(static_inventory(devices), f, Dumper=_Dumper, sort_keys=False)
    paths['static_yaml'] = path
    return paths


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_list_hosts(ansible: str, source: str, expected: int, repeat: int,
                    timeout: float) -> tuple[float, float] | None:
    """Best (wall, CPU) seconds of `repeat` runs; CPU time (user + system) is what load does not inflate."""
    best = None
    for _ in range(repeat):
        start, cpu_start = time.perf_counter(), _children_cpu()
        try:
            proc = subprocess.run(
                [ansible, 'all', '-i', source, '--list-hosts'],
                capture_output=True, text=True, timeout=timeout, check=False, env=ENV, cwd=REPO,
            )
        except subprocess.TimeoutExpired:
            return None
        elapsed, cpu = time.perf_counter() - start, _children_cpu() - cpu_start
        first = proc.stdout.lstrip().splitlines()[0] if proc.stdout.strip() else ''
        if proc.returncode != 0 or f'hosts ({expected})' not in first:
            sys.stderr.write(f'{source}: unexpected result (rc={proc.returncode}): {first!r}\n{proc.stderr[-2000:]}\n')
            raise SystemExit(1)
        if best is None or elapsed < best[0]:
            best = (elapsed, cpu)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--sizes', default='1000,10000,50000', help='comma-separated fleet sizes')
    parser.add_argument('--sites', type=int, default=40, help='number of sites (default 40)')
    parser.add_argument('--repeat', type=int, default=3, help='runs per source; the best is shown (default 3)')
    parser.add_argument('--yaml-repeat', type=int, default=1, help="runs of ansible's yaml inventory (slow; default 1)")
    parser.add_argument('--timeout', type=float, default=600, help='seconds before one run is abandoned (default 600)')
    parser.add_argument('--ansible', default=os.path.join(os.path.dirname(sys.executable), 'ansible'),
                        help='the ansible executable (default: next to this Python)')
    parser.add_argument('--workdir', help='keep the generated files here (default: a temporary directory)')
    args = parser.parse_args(argv)

    sizes = [int(s) for s in args.sizes.split(',') if s.strip()]
    workdir = args.workdir or tempfile.mkdtemp(prefix='edgeai-inventory-bench-')
    os.makedirs(workdir, exist_ok=True)
    rows = []
    try:
        for size in sizes:
            directory = os.path.join(workdir, str(size))
            os.makedirs(directory, exist_ok=True)
            paths = write_sources(directory, size, args.sites)
            plugin_yaml = time_list_hosts(args.ansible, paths['plugin_yaml'], size, args.repeat, args.timeout)
            plugin_json = time_list_hosts(args.ansible, paths['plugin_json'], size, args.repeat, args.timeout)
            static = time_list_hosts(args.ansible, paths['static_yaml'], size, args.yaml_repeat, args.timeout)
            rows.append((size, plugin_yaml, plugin_json, static))
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    def fmt(value: tuple[float, float] | None) -> str:
        if value is None:
            return f'> {args.timeout:.0f} s'
        return f'{value[0]:.2f} s (CPU {value[1]:.2f} s)'

    load = ', '.join(f'{x:.1f}' for x in os.getloadavg())
    out = [
        '## Inventory: device_registry plugin vs ansible\'s yaml inventory',
        '',
        'The same fleet as a device registry file read by `edgeai.fleet.device_registry` (YAML and JSON) '
        'and as the equivalent static file read by ansible\'s `yaml` inventory plugin (same hosts, '
        'host variables and groups).',
        '',
        f'`ansible all -i <source> --list-hosts`: wall time of the fastest of {args.repeat} runs '
        f'(yaml inventory: of {args.yaml_repeat}), with the CPU time (user + system) of that run; '
        f'{args.sites} sites; Python {platform.python_version()}, {os.cpu_count()} CPUs, '
        f'load average {load} at the end.',
        '',
        '| devices | device_registry, YAML file | device_registry, JSON file '
        '| ansible yaml inventory (static file) | speed-up (YAML file, wall) |',
        '| ---: | ---: | ---: | ---: | ---: |',
    ]
    for size, plugin_yaml, plugin_json, static in rows:
        speedup = f'{static[0] / plugin_yaml[0]:.1f}x' if static and plugin_yaml else 'n/a'
        out.append(f'| {size:,} | {fmt(plugin_yaml)} | {fmt(plugin_json)} | {fmt(static)} | {speedup} |')
    sys.stdout.write('\n'.join(out) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
