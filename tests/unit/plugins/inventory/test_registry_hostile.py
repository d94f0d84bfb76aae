# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A hostile device registry (file or API): registry data is data, never code.

A registry comes from another team or system. Whatever it holds must not choose how Ansible
connects, escalates, which interpreter or shell it runs, or run anything on the controller:
`vars` may not set `ansible_*` variables (outside the `allow_ansible_vars` option), the
fields the plugin maps to `ansible_host`/`ansible_port`/`ansible_user` are validated
strictly, names Ansible gives the controller cannot be taken, and values are never
templated. The last tests run the real CLIs and check that a marker command did not run.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ansible.errors import AnsibleError
from device_registry_helpers import PLUGIN, REPO, TOKEN, ansible_env, device

DEVICE = 'site-a-dev-01'


def proxy_command(marker: Path) -> str:
    return f'-o ProxyCommand="sh -c \'touch {marker}\'"'


def hostvars(inventory, name=DEVICE):
    return inventory.get_host(name).get_vars()


def refused(key: str) -> str:
    """The error for a refused vars key names the device and the key, and says what to do."""
    return rf"device '{DEVICE}' .*vars key '{re.escape(key)}'"


# Every class of variable a registry could use to run code or change how Ansible connects.
HOSTILE_VARS = [
    # ProxyCommand through the ssh argument variables
    ('ansible_ssh_common_args', '-o ProxyCommand="sh -c \'id > /tmp/pwned\'"'),
    ('ansible_ssh_extra_args', '-oProxyCommand=touch /tmp/pwned'),
    ('ansible_sftp_extra_args', '-oProxyCommand=touch /tmp/pwned'),
    ('ansible_scp_extra_args', '-oProxyCommand=touch /tmp/pwned'),
    ('ansible_ssh_args', '-oProxyCommand=touch /tmp/pwned'),
    ('ansible_docker_extra_args', '--privileged'),
    # executables
    ('ansible_ssh_executable', '/tmp/evil'),
    ('ansible_shell_executable', '/tmp/evil'),
    ('ansible_become_exe', '/tmp/evil'),
    ('ansible_sudo_exe', '/tmp/evil'),
    # become
    ('ansible_become', True),
    ('ansible_become_method', 'su'),
    ('ansible_become_user', 'root'),
    ('ansible_become_flags', '-H -S -n; touch /tmp/pwned'),
    ('ansible_become_password', 'x'),
    # interpreters and shells
    ('ansible_python_interpreter', '/bin/sh -c "touch /tmp/pwned"'),
    ('ansible_shell_type', 'powershell'),
    # connection
    ('ansible_connection', 'local'),
    ('ansible_ssh_private_key_file', '/root/.ssh/id_ed25519'),
    # the address variables, only set by the plugin from validated fields
    ('ansible_host', '-oProxyCommand=touch /tmp/pwned'),
    ('ansible_ssh_host', 'attacker.example.com'),
    ('ansible_port', 2222),
    ('ansible_user', '-oProxyCommand=touch /tmp/pwned'),
    # any other ansible_* name
    ('ansible_network_os', 'ios'),
    ('ansible_facts', {'distribution': 'x'}),
    # case variants (Ansible names are case-sensitive; refused anyway)
    ('ANSIBLE_SSH_COMMON_ARGS', '-oProxyCommand=touch /tmp/pwned'),
    ('Ansible_Connection', 'local'),
]


@pytest.mark.parametrize(('key', 'value'), HOSTILE_VARS, ids=[pair[0] for pair in HOSTILE_VARS])
def test_file_vars_may_not_set_ansible_variables(write_fleet, load_inventory, key, value):
    config = write_fleet([device(2), device(1, vars={'edge_device_root': '/opt/x', key: value})])
    with pytest.raises(AnsibleError, match=refused(key)) as err:
        load_inventory(config)
    message = str(err.value)
    assert 'allow_ansible_vars' in message and 'remove' in message


@pytest.mark.parametrize('key', [
    'ansible_ssh_common_args ',       # trailing space
    ' ansible_connection',            # leading space
    'ansible-connection',             # not a variable name
    '\uff41nsible_connection',        # fullwidth "a": NFKC-normalizes to ansible_connection
    'ansible_conn\u200bection',       # zero-width space
    'edge\nansible_connection',       # newline
])
def test_vars_keys_must_be_plain_variable_names(write_fleet, load_inventory, key):
    config = write_fleet([device(1, vars={key: 'local'})], devices_name='devices.json')
    with pytest.raises(AnsibleError, match=rf"device '{DEVICE}' .*vars key .* is not a valid variable name"):
        load_inventory(config)


@pytest.mark.parametrize('key', ['lookup', 'query', 'omit', 'environment', 'remote_user', 'become',
                                 'inventory_hostname', 'hostvars', 'groups'])
def test_vars_may_not_shadow_reserved_or_magic_names(write_fleet, load_inventory, key):
    config = write_fleet([device(1, vars={key: 'x'})])
    with pytest.raises(AnsibleError, match=rf"{refused(key)} .*(reserved|magic)"):
        load_inventory(config)


def test_top_level_ansible_fields_are_ignored_not_set(write_fleet, load_inventory, warnings):
    """A device field outside the format (even an ansible_* one) is ignored with a warning."""
    record = device(1, ansible_ssh_common_args='-oProxyCommand=touch /tmp/pwned', ansible_connection='local')
    inv = load_inventory(write_fleet([record]))
    v = hostvars(inv)
    assert 'ansible_ssh_common_args' not in v and 'ansible_connection' not in v
    assert any("'ansible_ssh_common_args'" in w for w in warnings)


# ----------------------------------------------------------------------------- the allow-list


def test_allow_list_lets_only_the_named_variable_through(write_fleet, load_inventory):
    options = {'allow_ansible_vars': ['ansible_port']}
    inv = load_inventory(write_fleet([device(1, vars={'ansible_port': 2222})], options=options))
    assert hostvars(inv)['ansible_port'] == 2222

    both = device(1, vars={'ansible_port': 2222, 'ansible_python_interpreter': '/usr/bin/python3'})
    with pytest.raises(AnsibleError, match=refused('ansible_python_interpreter')):
        load_inventory(write_fleet([both], options=options, name='both'))

    upper = device(1, vars={'ANSIBLE_PORT': 2222})  # the allow-list is exact, case included
    with pytest.raises(AnsibleError, match=refused('ANSIBLE_PORT')):
        load_inventory(write_fleet([upper], options=options, name='upper'))


@pytest.mark.parametrize(('key', 'value'), [
    ('ansible_host', '-oProxyCommand=touch /tmp/pwned'),
    ('ansible_host', 'edge 1.example.com'),
    ('ansible_port', 0),
    ('ansible_port', '22 -oProxyCommand=x'),
    ('ansible_user', '-oProxyCommand=touch /tmp/pwned'),
    ('ansible_user', 'root@attacker'),
])
def test_allow_listed_address_variables_are_still_validated(write_fleet, load_inventory, key, value):
    config = write_fleet([device(1, vars={key: value})], options={'allow_ansible_vars': [key]})
    with pytest.raises(AnsibleError, match=rf"device '{DEVICE}' .*vars key '{key}'.* (invalid|must be)"):
        load_inventory(config)


@pytest.mark.parametrize('entry', ['edge_device_root', 'ansible_*', 'lookup'])
def test_allow_list_takes_only_exact_ansible_names(write_fleet, load_inventory, entry):
    with pytest.raises(AnsibleError, match=rf"allow_ansible_vars: .*{re.escape(repr(entry))}"):
        load_inventory(write_fleet([device(1)], options={'allow_ansible_vars': [entry]}))


# ----------------------------------------------------------------------------- mapped fields


@pytest.mark.parametrize('user', ['-oProxyCommand=touch /tmp/pwned', '-l', 'root -p 2222', 'root\n', 'ro\tot',
                                  'root@attacker', '%n', 'a' * 65, '.hidden'])
def test_user_must_be_a_plain_user_name(write_fleet, load_inventory, user):
    config = write_fleet([device(1, user=user)], devices_name='devices.json')
    with pytest.raises(AnsibleError, match=rf"device '{DEVICE}' .*(invalid user|field 'user' contains control)"):
        load_inventory(config)


def test_plain_user_names_are_kept(write_fleet, load_inventory):
    devices = [device(i, user=user) for i, user in enumerate(['root', 'edge-admin', 'svc.deploy', 'ubuntu_2'], 1)]
    inv = load_inventory(write_fleet(devices))
    assert [hostvars(inv, f'site-a-dev-0{i}')['ansible_user'] for i in range(1, 5)] == [
        'root', 'edge-admin', 'svc.deploy', 'ubuntu_2']


@pytest.mark.parametrize('address', ['edge-1.example.com\n', '10.0.0.1\n', '127.0.0.1\x00', 'edge-1\r',
                                     '-oProxyCommand=touch', 'fe80::1%eth0'])
def test_address_with_odd_characters_is_refused(write_fleet, load_inventory, address):
    config = write_fleet([device(1, address=address)], devices_name='devices.json')
    with pytest.raises(AnsibleError, match=rf"device '{DEVICE}' .*invalid address"):
        load_inventory(config)


@pytest.mark.parametrize(('field', 'value'), [
    ('id', 'dev-01\n'),
    ('site', 'site-a\n- id: injected'),
    ('platform', 'jetson\x1b[2J'),
    ('hardware', 'orin\u202enano'),   # right-to-left override
    ('ring', 'canary\x00'),
])
def test_names_with_control_characters_are_refused(write_fleet, load_inventory, field, value):
    record = device(1)
    record[field] = value
    with pytest.raises(AnsibleError, match=r"device .*(control|id .* may only contain)"):
        load_inventory(write_fleet([record], devices_name='devices.json'))


@pytest.mark.parametrize('device_id', ['localhost', '127.0.0.1', 'LocalHost'])
def test_a_device_may_not_take_the_controllers_name(write_fleet, load_inventory, device_id):
    """A registry host named localhost would be what `hosts: localhost` plays (and their host
    variables) resolve to, instead of the controller."""
    config = write_fleet([device(1, id=device_id)])
    with pytest.raises(AnsibleError, match=rf"device '{re.escape(device_id)}' .*controller"):
        load_inventory(config)


def test_keyed_groups_may_not_make_a_localhost_group(write_fleet, load_inventory):
    options = {'keyed_groups': [{'key': 'edge_labels.role', 'prefix': ''}], 'leading_separator': False}
    config = write_fleet([device(1, labels={'role': 'localhost'})], options=options)
    with pytest.raises(AnsibleError, match=r"group 'localhost'"):
        load_inventory(config)
    # the same keyed group with a harmless value is fine
    inv = load_inventory(write_fleet([device(1, labels={'role': 'gateway'})], options=options, name='ok'))
    assert [h.name for h in inv.groups['gateway'].get_hosts()] == [DEVICE]


def test_a_device_may_not_take_over_a_host_of_another_source(plugin_loader, write_fleet, tmp_path, monkeypatch):
    """Next to a static inventory, a registry device may not re-address one of its hosts."""
    from ansible import constants as C
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.utils.display import Display

    monkeypatch.setattr(C, 'INVENTORY_ENABLED', [PLUGIN, 'yaml'])
    failures: list[str] = []
    monkeypatch.setattr(Display, 'error_as_warning',
                        lambda self, msg, exception, *a, **k: failures.append(str(exception)))
    static = tmp_path / 'hosts.yml'
    static.write_text(yaml.safe_dump({'all': {'hosts': {'bastion': {'ansible_host': '10.9.0.1'}}}}))
    config = write_fleet([device(1, id='bastion', address='10.66.6.6')])
    inv = InventoryManager(loader=DataLoader(), sources=[str(static), str(config)])
    assert any("device 'bastion'" in f and 'already defined by another inventory source' in f
               for f in failures), failures
    assert inv.get_host('bastion').get_vars()['ansible_host'] == '10.9.0.1'


def test_hostvar_prefix_may_not_be_ansible(write_fleet, load_inventory):
    with pytest.raises(AnsibleError, match='hostvar_prefix'):
        load_inventory(write_fleet([device(1)], options={'hostvar_prefix': 'ansible_'}))


# ----------------------------------------------------------------------------- templating


def test_template_values_are_not_rendered(write_fleet, load_inventory, tmp_path):
    from ansible.template import Templar, is_trusted_as_template

    marker = tmp_path / 'rendered'
    value = f"{{{{ lookup('pipe', 'touch {marker}') }}}}"
    record = device(1, vars={'edge_note': value, 'edge_nested': {'a': [value]}}, labels={'x': value})
    inv = load_inventory(write_fleet([record]))
    v = hostvars(inv)
    templar = Templar(variables=v)
    for item in (v['edge_note'], v['edge_nested']['a'][0], v['edge_labels']['x']):
        assert not is_trusted_as_template(item)
        assert templar.template(item) == value
    assert templar.template(v['edge_nested']) == {'a': [value]}
    assert not marker.exists()


# ----------------------------------------------------------------------------- the registry API


def api_options(api, **extra):
    options = {'api_url': api.url, 'api_token': TOKEN, 'ca_path': str(api.ca_path), 'source_file': None}
    options.update(extra)
    return options


API_HOSTILE = [
    ('ansible_ssh_common_args', '-o ProxyCommand="sh -c \'touch /tmp/pwned\'"'),
    ('ansible_ssh_extra_args', '-oProxyCommand=touch /tmp/pwned'),
    ('ansible_ssh_executable', '/tmp/evil'),
    ('ansible_become_method', 'su'),
    ('ansible_python_interpreter', '/tmp/evil'),
    ('ansible_shell_executable', '/tmp/evil'),
    ('ansible_connection', 'local'),
    ('ansible_host', '-oProxyCommand=touch /tmp/pwned'),
]


@pytest.mark.parametrize(('key', 'value'), API_HOSTILE, ids=[pair[0] for pair in API_HOSTILE])
def test_api_vars_may_not_set_ansible_variables(registry_api, write_fleet, load_inventory, key, value):
    registry_api.state.devices = [device(2), device(1, vars={key: value})]
    with pytest.raises(AnsibleError, match=rf"{refused(key)}.*allow_ansible_vars"):
        load_inventory(write_fleet(options=api_options(registry_api)))


def test_api_option_like_user_is_refused(registry_api, write_fleet, load_inventory):
    registry_api.state.devices = [device(1, user='-oProxyCommand=touch /tmp/pwned')]
    with pytest.raises(AnsibleError, match=rf"device '{DEVICE}' .*invalid user"):
        load_inventory(write_fleet(options=api_options(registry_api)))


def test_api_device_named_localhost_is_refused(registry_api, write_fleet, load_inventory):
    registry_api.state.devices = [device(1, id='localhost')]
    with pytest.raises(AnsibleError, match=r"device 'localhost' .*controller"):
        load_inventory(write_fleet(options=api_options(registry_api)))


def test_api_allow_list_lets_only_the_named_variable_through(registry_api, write_fleet, load_inventory):
    registry_api.state.devices = [device(1, vars={'ansible_port': 2222})]
    config = write_fleet(options=api_options(registry_api, allow_ansible_vars=['ansible_port']))
    assert hostvars(load_inventory(config))['ansible_port'] == 2222

    registry_api.state.devices = [device(1, vars={'ansible_port': 2222, 'ansible_connection': 'local'})]
    with pytest.raises(AnsibleError, match=refused('ansible_connection')):
        load_inventory(config)


def test_api_template_values_are_not_rendered(registry_api, write_fleet, load_inventory, tmp_path):
    from ansible.template import Templar

    marker = tmp_path / 'rendered'
    value = f"{{{{ lookup('pipe', 'touch {marker}') }}}}"
    registry_api.state.devices = [device(1, vars={'edge_note': value})]
    v = hostvars(load_inventory(write_fleet(options=api_options(registry_api))))
    assert Templar(variables=v).template(v['edge_note']) == value
    assert not marker.exists()


def test_refused_api_data_does_not_replace_the_cached_data(registry_api, write_fleet, load_inventory, tmp_path):
    """A hostile answer is refused and not cached, so on_api_error=cache falls back to the last good data."""
    cache = {'cache': True, 'cache_plugin': 'ansible.builtin.jsonfile', 'cache_connection': str(tmp_path / 'cache'),
             'cache_timeout': 0, 'on_api_error': 'cache'}
    config = write_fleet(options=api_options(registry_api, **cache))
    registry_api.state.devices = [device(1)]
    load_inventory(config)

    registry_api.state.devices = [device(1, vars={'ansible_connection': 'local'})]
    with pytest.raises(AnsibleError, match=refused('ansible_connection')):
        load_inventory(config, cache=False)
    assert all('ansible_connection' not in f.read_text() for f in (tmp_path / 'cache').iterdir())

    registry_api.state.mode = 'error500'
    assert 'ansible_connection' not in hostvars(load_inventory(config, cache=False))


# ----------------------------------------------------------------------------- the real CLIs


def _hostile_fleet(tmp_path: Path, marker: Path, allow=None) -> Path:
    devices = [{'id': DEVICE, 'site': 'site-a', 'platform': 'jetson', 'hardware': 'agx-orin',
                'address': '127.0.0.1', 'port': 22, 'user': 'root',
                'vars': {'ansible_ssh_common_args': proxy_command(marker)}}]
    (tmp_path / 'devices.yml').write_text(yaml.safe_dump({'devices': devices}))
    config = {'plugin': PLUGIN, 'source_file': 'devices.yml'}
    if allow:
        config['allow_ansible_vars'] = allow
    path = tmp_path / 'hostile.device_registry.yml'
    path.write_text(yaml.safe_dump(config))
    return path


def _cli(name: str, collections_dir: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {'ANSIBLE_SSH_CONTROL_PATH_DIR': str(tmp_path / 'cp'), 'ANSIBLE_TIMEOUT': '10',
           'ANSIBLE_LOCAL_TEMP': str(tmp_path / 'tmp')}
    return subprocess.run([str(Path(sys.executable).parent / name), *args], cwd=REPO,
                          env=ansible_env(collections_dir, env), capture_output=True, text=True, timeout=120,
                          check=False)


def test_ansible_inventory_refuses_a_proxycommand(collections_dir, tmp_path):
    marker = tmp_path / 'proxycommand-ran'
    proc = _cli('ansible-inventory', collections_dir, tmp_path, '-i', str(_hostile_fleet(tmp_path, marker)), '--list')
    assert proc.returncode != 0, proc.stdout
    assert f"device '{DEVICE}'" in proc.stderr and "vars key 'ansible_ssh_common_args'" in proc.stderr, proc.stderr
    assert not marker.exists()


def test_ansible_ping_does_not_run_a_registry_proxycommand(collections_dir, tmp_path):
    marker = tmp_path / 'proxycommand-ran'
    proc = _cli('ansible', collections_dir, tmp_path, 'all', '-i', str(_hostile_fleet(tmp_path, marker)),
                '-m', 'ansible.builtin.ping')
    assert not marker.exists(), 'the registry ProxyCommand ran on the controller'
    assert proc.returncode != 0
    assert "vars key 'ansible_ssh_common_args'" in proc.stderr, proc.stderr


def test_control_an_allow_listed_proxycommand_does_run(collections_dir, tmp_path):
    """The control for the test above: the marker mechanism does detect a ProxyCommand that runs
    (here from a registry trusted for it through allow_ansible_vars)."""
    marker = tmp_path / 'proxycommand-ran'
    config = _hostile_fleet(tmp_path, marker, allow=['ansible_ssh_common_args'])
    proc = _cli('ansible', collections_dir, tmp_path, 'all', '-i', str(config), '-m', 'ansible.builtin.ping')
    assert proc.returncode != 0  # the proxy exits at once, so ssh cannot connect
    assert marker.exists(), proc.stdout + proc.stderr


def test_ansible_debug_does_not_render_a_registry_template(collections_dir, tmp_path):
    marker = tmp_path / 'lookup-ran'
    value = f"{{{{ lookup('pipe', 'touch {marker}') }}}}"
    devices = [{'id': DEVICE, 'site': 'site-a', 'platform': 'jetson', 'hardware': 'agx-orin',
                'address': '127.0.0.1', 'vars': {'edge_note': value}}]
    (tmp_path / 'devices.yml').write_text(yaml.safe_dump({'devices': devices}))
    config = tmp_path / 'notes.device_registry.yml'
    config.write_text(yaml.safe_dump({'plugin': PLUGIN, 'source_file': 'devices.yml'}))
    proc = _cli('ansible', collections_dir, tmp_path, DEVICE, '-i', str(config), '-m', 'ansible.builtin.debug',
                '-a', 'msg={{ edge_note }}')
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not marker.exists()
    assert 'msg: \'{{ lookup(' in proc.stdout, proc.stdout  # printed as the literal string


def test_a_refused_registry_contributes_nothing(plugin_loader, write_fleet, monkeypatch):
    """With ansible's default (a failed source is a warning), the devices added before the
    refusal are taken out again: no hosts, no groups, no localhost group."""
    from ansible import constants as C
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.utils.display import Display

    monkeypatch.setattr(C, 'INVENTORY_ENABLED', [PLUGIN])
    monkeypatch.setattr(C, 'INVENTORY_UNPARSED_IS_FAILED', False)
    monkeypatch.setattr(C, 'INVENTORY_ANY_UNPARSED_IS_FAILED', False)
    failures: list[str] = []
    monkeypatch.setattr(Display, 'error_as_warning',
                        lambda self, msg, exception, *a, **k: failures.append(str(exception)))
    options = {'keyed_groups': [{'key': 'edge_labels.role', 'prefix': ''}], 'leading_separator': False}
    devices = [device(1, labels={'role': 'gateway'}), device(2, labels={'role': 'localhost'})]
    inv = InventoryManager(loader=DataLoader(), sources=[str(write_fleet(devices, options=options))])
    assert any("group 'localhost'" in f for f in failures), failures
    assert inv.list_hosts('all') == []
    assert set(inv.groups) == {'all', 'ungrouped'}
