# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""edgeai.fleet.device_registry through InventoryManager: hosts, vars, groups, filters,
rollout order, errors and warnings, the constructed options."""

from __future__ import annotations

import random

import pytest
import yaml
from ansible.errors import AnsibleError
from device_registry_helpers import PLUGIN, device


def hostvars(inventory, name):
    return inventory.get_host(name).get_vars()


def group_hosts(inventory, group):
    return [h.name for h in inventory.groups[group].get_hosts()]


def ordered_hosts(inventory):
    """Hosts in the order the plugin added them (what `--list-hosts` and serial batches use)."""
    return [h.name for h in inventory.get_hosts('all')]


# ----------------------------------------------------------------------------- hosts and vars


def test_device_fields_become_prefixed_hostvars_and_groups(write_fleet, load_inventory):
    config = write_fleet([
        device(1, hardware='agx-orin', port=22001, user='root', ring='canary', labels={'line': 'a'},
               vars={'edge_device_root': '/opt/edgeai-lab/root'}),
        device(2, platform='coral', hardware='coral-dev-board', address='coral-2.site-a.example.com'),
    ])
    inv = load_inventory(config)

    v = hostvars(inv, 'site-a-dev-01')
    assert v['ansible_host'] == '10.0.97.1'
    assert v['ansible_port'] == 22001
    assert v['ansible_user'] == 'root'
    assert v['edge_site'] == 'site-a'
    assert v['edge_platform'] == 'jetson'
    assert v['edge_hardware'] == 'agx-orin'
    assert v['edge_ring'] == 'canary'
    assert v['edge_labels'] == {'line': 'a'}
    assert v['edge_maintenance'] is False
    assert v['edge_rollout_order'] == 1
    assert v['edge_device_root'] == '/opt/edgeai-lab/root'

    v2 = hostvars(inv, 'site-a-dev-02')
    assert v2['ansible_host'] == 'coral-2.site-a.example.com'
    assert v2['edge_ring'] == 'broad'  # default ring
    assert v2['edge_labels'] == {}
    assert 'ansible_port' not in v2 and 'ansible_user' not in v2

    assert group_hosts(inv, 'site_site_a') == ['site-a-dev-01', 'site-a-dev-02']
    assert group_hosts(inv, 'platform_jetson') == ['site-a-dev-01']
    assert group_hosts(inv, 'platform_coral') == ['site-a-dev-02']
    assert group_hosts(inv, 'hardware_agx_orin') == ['site-a-dev-01']
    assert group_hosts(inv, 'hardware_coral_dev_board') == ['site-a-dev-02']
    assert group_hosts(inv, 'ring_canary') == ['site-a-dev-01']
    assert group_hosts(inv, 'ring_broad') == ['site-a-dev-02']


def test_hostvar_prefix_is_configurable(write_fleet, load_inventory):
    inv = load_inventory(write_fleet([device(1)], options={'hostvar_prefix': 'fleet_'}))
    v = hostvars(inv, 'site-a-dev-01')
    assert v['fleet_site'] == 'site-a' and v['fleet_rollout_order'] == 1
    assert not any(k.startswith('edge_') for k in v)


def test_invalid_hostvar_prefix_is_refused(write_fleet, load_inventory):
    with pytest.raises(AnsibleError, match='hostvar_prefix'):
        load_inventory(write_fleet([device(1)], options={'hostvar_prefix': 'edge-'}))


def test_group_names_are_sanitized(write_fleet, load_inventory):
    record = device(1, site='Berlin Süd.1', id='berlin-1', hardware='orin/nano 8GB', ring='wave-2')
    inv = load_inventory(write_fleet([record]))
    assert set(inv.groups) >= {'site_Berlin_S_d_1', 'hardware_orin_nano_8GB', 'ring_wave_2', 'platform_jetson'}


def test_address_plan_derives_ansible_host(write_fleet, load_inventory):
    sites = {'site-a': {'address_plan': {'subnet': '10.20.0.0/24', 'start': 10}},
             'site-b': {'address_plan': {'subnet': 'fd00:20::/64'}}}
    devices = [
        {'id': 'a1', 'site': 'site-a', 'platform': 'jetson', 'hardware': 'agx-orin', 'index': 0},
        {'id': 'a2', 'site': 'site-a', 'platform': 'jetson', 'hardware': 'agx-orin', 'index': 5},
        {'id': 'b1', 'site': 'site-b', 'platform': 'coral', 'hardware': 'coral-usb', 'index': 3},
    ]
    inv = load_inventory(write_fleet(devices, sites=sites))
    assert hostvars(inv, 'a1')['ansible_host'] == '10.20.0.10'
    assert hostvars(inv, 'a2')['ansible_host'] == '10.20.0.15'
    assert hostvars(inv, 'b1')['ansible_host'] == 'fd00:20::3'


def test_json_source_file_is_read(write_fleet, load_inventory):
    inv = load_inventory(write_fleet([device(1), device(2)], devices_name='devices.json'))
    assert ordered_hosts(inv) == ['site-a-dev-01', 'site-a-dev-02']


def test_source_file_is_relative_to_the_config(tmp_path, load_inventory):
    (tmp_path / 'registry').mkdir()
    (tmp_path / 'registry' / 'devices.yml').write_text(yaml.safe_dump({'devices': [device(1)]}))
    (tmp_path / 'inv').mkdir()
    config = tmp_path / 'inv' / 'x.device_registry.yaml'
    config.write_text(f'plugin: {PLUGIN}\nsource_file: ../registry/devices.yml\n')
    assert ordered_hosts(load_inventory(config)) == ['site-a-dev-01']


def test_only_the_documented_suffix_is_claimed(tmp_path, plugin_loader):
    from ansible.plugins.loader import inventory_loader

    plugin = inventory_loader.get(PLUGIN)
    for name, wanted in (('a.device_registry.yml', True), ('a.device_registry.yaml', True),
                         ('a.yml', False), ('device_registry.yml.bak', False)):
        path = tmp_path / name
        path.write_text(f'plugin: {PLUGIN}\nsource_file: devices.yml\n')
        assert plugin.verify_file(str(path)) is wanted, name


def test_registry_values_are_untrusted_data(write_fleet, load_inventory):
    from ansible.template import Templar, is_trusted_as_template

    config = write_fleet([device(1, labels={'note': '{{ 6 * 7 }}'}, vars={'motd': '{{ lookup("env", "HOME") }}'})])
    inv = load_inventory(config)
    v = hostvars(inv, 'site-a-dev-01')
    assert not is_trusted_as_template(v['motd'])
    assert not is_trusted_as_template(v['edge_labels']['note'])
    assert not is_trusted_as_template(v['edge_site'])
    templar = Templar(variables=v)
    assert templar.template(v['motd']) == '{{ lookup("env", "HOME") }}'  # not rendered


# ----------------------------------------------------------------------------- filters


def _filter_fleet():
    return [
        device(1, 'ber-1', labels={'line': 'a', 'tier': 'gold'}),
        device(2, 'ber-1', platform='coral', hardware='coral-usb', labels={'line': 'b'}),
        device(3, 'ber-2', labels={'line': 'a'}),
        device(4, 'muc-1', platform='generic', hardware='generic', labels={'line': 'c'}),
        device(5, 'muc-1', maintenance=True, labels={'line': 'a'}),
    ]


@pytest.mark.parametrize(('options', 'expected'), [
    ({}, {'ber-1-dev-01', 'ber-1-dev-02', 'ber-2-dev-03', 'muc-1-dev-04'}),
    ({'include_maintenance': True}, {'ber-1-dev-01', 'ber-1-dev-02', 'ber-2-dev-03', 'muc-1-dev-04', 'muc-1-dev-05'}),
    ({'include_sites': ['ber-*']}, {'ber-1-dev-01', 'ber-1-dev-02', 'ber-2-dev-03'}),
    ({'exclude_sites': ['ber-2', 'muc-1']}, {'ber-1-dev-01', 'ber-1-dev-02'}),
    ({'include_platforms': ['jetson']}, {'ber-1-dev-01', 'ber-2-dev-03'}),
    ({'exclude_platforms': ['jetson', 'generic']}, {'ber-1-dev-02'}),
    ({'include_labels': {'line': 'a'}}, {'ber-1-dev-01', 'ber-2-dev-03'}),
    ({'include_labels': {'line': ['b', 'c']}}, {'ber-1-dev-02', 'muc-1-dev-04'}),
    ({'include_labels': {'line': 'a', 'tier': 'gold'}}, {'ber-1-dev-01'}),
    ({'exclude_labels': {'line': 'a'}}, {'ber-1-dev-02', 'muc-1-dev-04'}),
    ({'include_sites': ['ber-*'], 'exclude_labels': {'tier': 'gold'}, 'include_platforms': ['jetson']},
     {'ber-2-dev-03'}),
])
def test_filters(write_fleet, load_inventory, options, expected):
    inv = load_inventory(write_fleet(_filter_fleet(), options=options))
    assert set(ordered_hosts(inv)) == expected


def test_maintenance_device_included_on_request_carries_the_flag(write_fleet, load_inventory):
    inv = load_inventory(write_fleet(_filter_fleet(), options={'include_maintenance': True}))
    assert hostvars(inv, 'muc-1-dev-05')['edge_maintenance'] is True


def test_bad_label_filter_is_refused(write_fleet, load_inventory):
    with pytest.raises(AnsibleError, match="include_labels: label 'line'"):
        load_inventory(write_fleet(_filter_fleet(), options={'include_labels': {'line': {'x': 1}}}))


# ----------------------------------------------------------------------------- rollout order


def _ring_fleet():
    devices = []
    hardware = ('xavier-nx', 'agx-orin', 'jetson-nano')  # mixed, so no single group holds the order
    for site, count in (('site-c', 3), ('site-a', 4), ('site-b', 2)):
        for i in range(1, count + 1):
            devices.append(device(i, site, hardware=hardware[i % 3]))
    devices += [
        device(10, 'site-b', ring='canary'), device(10, 'site-a', ring='canary'),
        device(11, 'site-c', ring='early'),
        device(12, 'site-a', ring='zeta'), device(12, 'site-b', ring='pilot'),
    ]
    return devices


def test_rollout_order_rings_then_sites_round_robin(write_fleet, load_inventory):
    inv = load_inventory(write_fleet(_ring_fleet()))
    expected = [
        'site-a-dev-10', 'site-b-dev-10',                    # canary
        'site-c-dev-11',                                     # early
        'site-a-dev-01', 'site-b-dev-01', 'site-c-dev-01',   # broad, round robin by site name
        'site-a-dev-02', 'site-b-dev-02', 'site-c-dev-02',
        'site-a-dev-03', 'site-c-dev-03',
        'site-a-dev-04',
        'site-b-dev-12',                                     # other rings by name: pilot
        'site-a-dev-12',                                     # zeta
    ]
    assert ordered_hosts(inv) == expected
    assert [hostvars(inv, h)['edge_rollout_order'] for h in expected] == list(range(1, len(expected) + 1))


def test_rollout_order_is_stable_and_interleaves_sites(write_fleet, load_inventory, tmp_path):
    devices = [device(i, f'site-{s}', hardware=f'hw-{i % 4}', platform='coral' if i % 3 else 'jetson')
               for s in 'abcde' for i in range(1, 21)]
    orders = []
    for seed in (1, 2):
        random.Random(seed).shuffle(devices)
        inv = load_inventory(write_fleet(devices, name=f'run{seed}'))
        orders.append(ordered_hosts(inv))
    assert orders[0] == orders[1]
    sites = [h.rsplit('-dev-', 1)[0] for h in orders[0]]
    assert all(a != b for a, b in zip(sites, sites[1:], strict=False))  # never two of one site in a row
    # any window of 5 consecutive hosts holds one device of each of the 5 sites
    assert all(len(set(sites[i:i + 5])) == 5 for i in range(0, len(sites) - 4))


# ----------------------------------------------------------------------------- errors and warnings


def test_malformed_yaml_names_file_and_line(write_fleet, load_inventory):
    raw = 'devices:\n  - id: a\n    site: [unclosed\n  - id: b\n'
    config = write_fleet(raw=raw)
    with pytest.raises(AnsibleError, match=r'malformed YAML in device registry file .*devices\.yml at line \d+'):
        load_inventory(config)


def test_malformed_json_names_file_and_line(write_fleet, load_inventory):
    config = write_fleet(raw='{"devices": [\n  {"id": "a",}\n]}\n', devices_name='devices.json')
    with pytest.raises(AnsibleError, match=r'malformed JSON in device registry file .*devices\.json at line 2'):
        load_inventory(config)


def test_duplicate_id_names_both_places(write_fleet, load_inventory):
    config = write_fleet([device(1), device(2), device(1, address='10.9.9.9')])
    with pytest.raises(AnsibleError) as err:
        load_inventory(config)
    message = str(err.value)
    assert "duplicate device id 'site-a-dev-01'" in message
    assert 'devices[0] of' in message and 'devices[2] of' in message
    assert 'line 2' in message and 'line 12' in message


@pytest.mark.parametrize('address', ['10.0.0.256', '10.1', 'bad_host.example.com', '-lead.example.com', '',
                                     'a' * 64 + '.com', 'fe80::1::2'])
def test_invalid_address_names_the_device(write_fleet, load_inventory, address):
    with pytest.raises(AnsibleError, match=r"device 'site-a-dev-03' .*invalid address"):
        load_inventory(write_fleet([device(1), device(3, address=address)]))


@pytest.mark.parametrize(('fields', 'message'), [
    ({'site': None}, "missing required field 'site'"),
    ({'platform': None}, "missing required field 'platform'"),
    ({'address': None}, 'missing "address"'),
    ({'address': None, 'index': 1}, "site 'site-a' has no address_plan"),
    ({'index': 1}, 'either "address" or "index"'),
    ({'port': 70000}, 'port must be an integer between 1 and 65535'),
    ({'labels': ['a']}, 'labels must be a mapping'),
    ({'vars': 'x=1'}, 'vars must be a mapping'),
    ({'maintenance': 'maybe'}, "field 'maintenance' must be a boolean"),
    ({'id': 'has space'}, "id 'has space' may only contain"),
])
def test_invalid_device_fields(write_fleet, load_inventory, fields, message):
    record = device(1)
    record.update(fields)
    record = {k: v for k, v in record.items() if v is not None}
    with pytest.raises(AnsibleError, match=message):
        load_inventory(write_fleet([record]))


def test_index_outside_the_subnet(write_fleet, load_inventory):
    sites = {'site-a': {'address_plan': {'subnet': '10.20.0.0/28', 'start': 10}}}
    record = {'id': 'a1', 'site': 'site-a', 'platform': 'jetson', 'hardware': 'x', 'index': 6}
    with pytest.raises(AnsibleError, match=r"device 'a1' .*index 6 \(start 10\) is outside subnet 10.20.0.0/28"):
        load_inventory(write_fleet([record], sites=sites))


def test_bad_subnet_is_reported(write_fleet, load_inventory):
    with pytest.raises(AnsibleError, match="address_plan of site 'site-a' has an invalid subnet"):
        load_inventory(write_fleet([device(1)], sites={'site-a': {'address_plan': {'subnet': '10.0.0.0/33'}}}))


def test_no_source_is_an_error(write_fleet, load_inventory):
    with pytest.raises(AnsibleError, match='set source_file, api_url or both'):
        load_inventory(write_fleet([device(1)], options={'source_file': None}))


def test_missing_source_file(tmp_path, load_inventory):
    config = tmp_path / 'x.device_registry.yml'
    config.write_text(f'plugin: {PLUGIN}\nsource_file: nowhere.yml\n')
    with pytest.raises(AnsibleError, match=r'cannot read device registry file .*nowhere\.yml'):
        load_inventory(config)


def test_unknown_fields_warn_once_per_field(write_fleet, load_inventory, warnings):
    devices = [device(i, serial=f'S{i}') for i in range(1, 4)]
    devices[0]['colour'] = 'red'
    inv = load_inventory(write_fleet(devices, sites={'site-a': {'timezone': 'UTC'}}))
    assert len(ordered_hosts(inv)) == 3
    serial = [w for w in warnings if "'serial'" in w]
    assert len(serial) == 1 and 'and 2 more' in serial[0] and 'devices[0]' in serial[0]
    assert any("'colour'" in w for w in warnings)
    assert any("site field 'timezone'" in w for w in warnings)


def test_empty_registry_gives_an_empty_inventory(write_fleet, load_inventory):
    inv = load_inventory(write_fleet(raw='# nothing yet\n'))
    assert ordered_hosts(inv) == []


# ----------------------------------------------------------------------------- constructed


def test_compose_groups_and_keyed_groups(write_fleet, load_inventory):
    options = {
        'compose': {'ansible_python_interpreter': "'/usr/bin/python3'", 'edge_line': 'edge_labels.line'},
        'groups': {'orins': "edge_hardware == 'agx-orin'"},
        'keyed_groups': [{'key': 'edge_line', 'prefix': 'line'}],
    }
    devices = [device(1, labels={'line': 'a'}), device(2, hardware='xavier-nx', labels={'line': 'b'})]
    inv = load_inventory(write_fleet(devices, options=options))
    assert hostvars(inv, 'site-a-dev-01')['ansible_python_interpreter'] == '/usr/bin/python3'
    assert hostvars(inv, 'site-a-dev-02')['edge_line'] == 'b'
    assert group_hosts(inv, 'orins') == ['site-a-dev-01']
    assert group_hosts(inv, 'line_a') == ['site-a-dev-01']
    assert group_hosts(inv, 'line_b') == ['site-a-dev-02']


def test_compose_errors_only_fail_when_strict(write_fleet, load_inventory):
    devices = [device(1)]
    inv = load_inventory(write_fleet(devices, options={'compose': {'x': 'edge_labels.missing.deeper'}}))
    assert 'x' not in hostvars(inv, 'site-a-dev-01')
    with pytest.raises(AnsibleError, match='Could not set x for host site-a-dev-01'):
        load_inventory(write_fleet(devices, options={'compose': {'x': 'edge_labels.missing.deeper'}, 'strict': True},
                                   name='strict'))
