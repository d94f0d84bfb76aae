# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""edgeai.fleet.device_registry against a real HTTPS registry API on 127.0.0.1 (started by the
test): bearer token, TLS verification, pagination, failures, merge with a file, the cache."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleError
from device_registry_helpers import TOKEN, device


def api_options(api, tmp_path, **extra):
    options = {'api_url': api.url, 'api_token': TOKEN, 'ca_path': str(api.ca_path), 'source_file': None}
    options.update(extra)
    return options


def cache_options(tmp_path):
    return {'cache': True, 'cache_plugin': 'ansible.builtin.jsonfile', 'cache_connection': str(tmp_path / 'cache'),
            'cache_timeout': 0}


def names(inventory):
    return [h.name for h in inventory.get_hosts('all')]


def device_requests(api):
    return [r for r in api.state.requests if r['path'].startswith('/api/devices')]


def test_paginated_fetch_with_token_and_verified_tls(registry_api, write_fleet, load_inventory, tmp_path):
    registry_api.state.devices = [device(i, site) for site in ('site-a', 'site-b') for i in range(1, 5)]
    registry_api.state.sites = {'site-c': {'address_plan': {'subnet': '10.30.0.0/24', 'start': 100}}}
    registry_api.state.devices.append({'id': 'c1', 'site': 'site-c', 'platform': 'coral', 'hardware': 'coral-usb',
                                       'index': 1})
    config = write_fleet(options=api_options(registry_api, tmp_path, api_page_size=3))
    inv = load_inventory(config)

    assert len(names(inv)) == 9
    assert inv.get_host('c1').get_vars()['ansible_host'] == '10.30.0.101'
    requests = device_requests(registry_api)
    assert [r['path'] for r in requests] == [
        '/api/devices?page_size=3',
        '/api/devices?page_size=3&page=2',
        '/api/devices?page_size=3&page=3',
    ]
    assert all(r['authorization'] == f'Bearer {TOKEN}' for r in requests)


def test_token_from_the_environment(registry_api, write_fleet, load_inventory, tmp_path, monkeypatch):
    registry_api.state.devices = [device(1)]
    options = api_options(registry_api, tmp_path)
    del options['api_token']
    monkeypatch.setenv('EDGEAI_REGISTRY_TOKEN', TOKEN)
    assert names(load_inventory(write_fleet(options=options))) == ['site-a-dev-01']


def test_wrong_token_fails_without_showing_it(registry_api, write_fleet, load_inventory, tmp_path):
    registry_api.state.devices = [device(1)]
    config = write_fleet(options=api_options(registry_api, tmp_path, api_token='not-the-token-xyz'))
    with pytest.raises(AnsibleError, match='answered HTTP 401') as err:
        load_inventory(config)
    assert 'not-the-token-xyz' not in str(err.value)


def test_tls_is_verified_by_default(registry_api, write_fleet, load_inventory, tmp_path):
    registry_api.state.devices = [device(1)]
    options = api_options(registry_api, tmp_path)
    del options['ca_path']  # the test CA is not in the system trust store
    with pytest.raises(AnsibleError, match=r'registry API https://127\.0\.0\.1:\d+/api/devices\?page_size=500 '
                                           r'.*(CERTIFICATE|certificate)'):
        load_inventory(write_fleet(options=options))
    options['validate_certs'] = False
    assert names(load_inventory(write_fleet(options=options, name='insecure'))) == ['site-a-dev-01']


@pytest.mark.parametrize(('mode', 'message'), [
    ('error500', 'answered HTTP 500'),
    ('malformed', 'returned malformed JSON'),
    ('offsite_next', 'points "next" to another server'),
    ('loop', 'pagination loops back'),
])
def test_api_failures_are_clear_errors(registry_api, write_fleet, load_inventory, tmp_path, mode, message):
    registry_api.state.devices = [device(i) for i in range(1, 6)]
    registry_api.state.mode = mode
    with pytest.raises(AnsibleError, match=message):
        load_inventory(write_fleet(options=api_options(registry_api, tmp_path, api_page_size=2)))


def test_unreachable_api(write_fleet, load_inventory, tmp_path):
    import socket

    with socket.socket() as s:  # a loopback port with nobody listening
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    options = {'api_url': f'https://127.0.0.1:{port}/api', 'source_file': None, 'api_timeout': 5}
    with pytest.raises(AnsibleError, match=rf'registry API https://127\.0\.0\.1:{port}/api/devices.* is unreachable'):
        load_inventory(write_fleet(options=options))


def test_file_and_api_are_merged(registry_api, write_fleet, load_inventory, tmp_path):
    registry_api.state.devices = [device(1, 'site-b'), device(2, 'site-b')]
    options = api_options(registry_api, tmp_path)
    options['source_file'] = 'devices.yml'
    inv = load_inventory(write_fleet([device(1, 'site-a')], options=options))
    assert names(inv) == ['site-a-dev-01', 'site-b-dev-01', 'site-b-dev-02']


def test_duplicate_between_file_and_api_names_both(registry_api, write_fleet, load_inventory, tmp_path):
    registry_api.state.devices = [device(2), device(1)]
    options = api_options(registry_api, tmp_path)
    options['source_file'] = 'devices.yml'
    with pytest.raises(AnsibleError, match=r"duplicate device id 'site-a-dev-01': devices\[0\] of .*devices\.yml, "
                                           r"line 2 and devices\[1\] of registry API https://127"):
        load_inventory(write_fleet([device(1)], options=options))


def test_api_values_are_untrusted(registry_api, write_fleet, load_inventory, tmp_path):
    from ansible.template import is_trusted_as_template

    registry_api.state.devices = [device(1, vars={'banner': '{{ 6 * 7 }}'}, labels={'x': '{{ 1 + 1 }}'})]
    inv = load_inventory(write_fleet(options=api_options(registry_api, tmp_path)))
    v = inv.get_host('site-a-dev-01').get_vars()
    assert v['banner'] == '{{ 6 * 7 }}' and not is_trusted_as_template(v['banner'])
    assert not is_trusted_as_template(v['edge_labels']['x'])


# ----------------------------------------------------------------------------- cache


def test_cache_is_used_until_refreshed(registry_api, write_fleet, load_inventory, tmp_path):
    registry_api.state.devices = [device(1)]
    config = write_fleet(options=api_options(registry_api, tmp_path, **cache_options(tmp_path)))
    assert names(load_inventory(config)) == ['site-a-dev-01']
    assert len(device_requests(registry_api)) == 1

    registry_api.state.devices = [device(1), device(2)]
    assert names(load_inventory(config)) == ['site-a-dev-01']  # from the cache, no request
    assert len(device_requests(registry_api)) == 1

    assert names(load_inventory(config, cache=False)) == ['site-a-dev-01', 'site-a-dev-02']  # --flush-cache
    assert len(device_requests(registry_api)) == 2


def test_cached_values_stay_untrusted(registry_api, write_fleet, load_inventory, tmp_path):
    from ansible.template import is_trusted_as_template

    registry_api.state.devices = [device(1, vars={'banner': '{{ 6 * 7 }}'})]
    config = write_fleet(options=api_options(registry_api, tmp_path, **cache_options(tmp_path)))
    load_inventory(config)
    v = load_inventory(config).get_host('site-a-dev-01').get_vars()  # second run reads the jsonfile cache
    assert len(device_requests(registry_api)) == 1
    assert v['banner'] == '{{ 6 * 7 }}' and not is_trusted_as_template(v['banner'])


def test_on_api_error_cache_falls_back_with_a_warning(registry_api, write_fleet, load_inventory, tmp_path, warnings):
    registry_api.state.devices = [device(1), device(2)]
    config = write_fleet(options=api_options(registry_api, tmp_path, on_api_error='cache', **cache_options(tmp_path)))
    assert names(load_inventory(config)) == ['site-a-dev-01', 'site-a-dev-02']

    registry_api.state.mode = 'error500'
    assert names(load_inventory(config, cache=False)) == ['site-a-dev-01', 'site-a-dev-02']
    assert len(device_requests(registry_api)) == 2  # it did try the API
    assert any('answered HTTP 500' in w and 'using the registry data cached' in w for w in warnings)


def test_on_api_error_fail_does_not_fall_back(registry_api, write_fleet, load_inventory, tmp_path):
    registry_api.state.devices = [device(1)]
    config = write_fleet(options=api_options(registry_api, tmp_path, **cache_options(tmp_path)))
    load_inventory(config)
    registry_api.state.mode = 'error500'
    with pytest.raises(AnsibleError, match='answered HTTP 500'):
        load_inventory(config, cache=False)


def test_on_api_error_cache_without_an_entry_fails(registry_api, write_fleet, load_inventory, tmp_path):
    registry_api.state.mode = 'error500'
    config = write_fleet(options=api_options(registry_api, tmp_path, on_api_error='cache', **cache_options(tmp_path)))
    with pytest.raises(AnsibleError, match='holds no earlier registry data'):
        load_inventory(config)


def test_on_api_error_cache_needs_the_cache_enabled(registry_api, write_fleet, load_inventory, tmp_path):
    registry_api.state.mode = 'error500'
    config = write_fleet(options=api_options(registry_api, tmp_path, on_api_error='cache'))
    with pytest.raises(AnsibleError, match='on_api_error=cache needs cache: true'):
        load_inventory(config)


def test_cache_does_not_hold_the_token(registry_api, write_fleet, load_inventory, tmp_path):
    registry_api.state.devices = [device(1)]
    load_inventory(write_fleet(options=api_options(registry_api, tmp_path, **cache_options(tmp_path))))
    files = list((tmp_path / 'cache').iterdir())
    assert files and all(TOKEN not in f.read_text() for f in files)


def test_page_size_must_be_positive(registry_api, write_fleet, load_inventory, tmp_path):
    with pytest.raises(AnsibleError, match='api_page_size must be at least 1'):
        load_inventory(write_fleet(options=api_options(registry_api, tmp_path, api_page_size=0)))
    assert device_requests(registry_api) == []
