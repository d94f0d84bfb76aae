# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: device_registry
short_description: Edge devices from a device registry file or HTTPS API
version_added: 0.1.0
author:
  - edgeai.fleet contributors (@edgeai)
description:
  - Builds an inventory of edge devices (NVIDIA Jetson, Google Coral, generic hosts) from a
    device registry, which is a local YAML or JSON file, an HTTPS registry API, or both merged.
  - The configuration file must be named C(<name>.device_registry.yml) or
    C(<name>.device_registry.yaml), for example C(fleet.device_registry.yml).
    In AWX, add it as an inventory source sourced from a project and set its C(source_path).
  - Every device becomes a host named after its C(id), with the host variables
    C(<prefix>site), C(<prefix>platform), C(<prefix>hardware), C(<prefix>ring),
    C(<prefix>labels), C(<prefix>maintenance) and C(<prefix>rollout_order)
    (C(<prefix>) is O(hostvar_prefix), C(edge_) by default), plus C(ansible_host),
    C(ansible_port) and C(ansible_user) from C(address)/C(index), C(port) and C(user).
    A device's own C(vars) mapping is added last.
  - The registry is data, never code. C(address) must be an IP address or a host name,
    C(port) an integer from 1 to 65535, C(user) a plain user name (letters, digits, C(.),
    C(_), C(-), not starting with C(-) or C(.)); names may not hold control characters; a
    device may not be named C(localhost), C(127.0.0.1) or C(::1), nor take over a host that an
    earlier inventory source defined.
  - A device's C(vars) may not set any C(ansible_*) variable (connection, become,
    interpreter, shell, executables, C(ansible_ssh_common_args) and so on, in any letter
    case) unless it is listed in O(allow_ansible_vars), nor a reserved name (playbook
    keywords, C(lookup), C(omit), magic variables such as C(hostvars)); keys must be plain
    variable names. Such a registry fails the whole inventory with an error naming the
    device and the key.
  - Every device is put into the groups C(site_<site>), C(platform_<platform>),
    C(hardware_<hardware>) and C(ring_<ring>); characters other than letters, digits and C(_)
    become C(_) (site C(site-a) gives C(site_site_a)).
  - Hosts are added in rollout order, and C(<prefix>rollout_order) (1, 2, ...) gives that
    order; ring C(canary) comes first, then C(early), then C(broad), then any other ring
    by name. Within a ring the sites (sorted by name) take turns, one device each (devices
    of a site sorted by C(id)), so consecutive hosts come from different sites while more
    than one site has devices left.
  - Devices with C(maintenance) set are left out unless O(include_maintenance) is set.
  - Values from the registry are data, never templates (ansible-core 2.19 data tagging marks
    them untrusted), so a C({{ ... }}) in a registry value is not rendered.
  - The device file format and the API contract are described in the collection's
    C(docs/inventory.md).
extends_documentation_fragment:
  - constructed
  - inventory_cache
requirements:
  - netaddr (Python library, on the controller)
options:
  plugin:
    description: The name of this plugin; makes the file an inventory source for it.
    required: true
    type: str
    choices:
      - edgeai.fleet.device_registry
  source_file:
    description:
      - A device registry file in YAML or JSON (C(.json) files are read as JSON, anything
        else as YAML).
      - A relative path is relative to the directory of the configuration file.
      - At least one of O(source_file) and O(api_url) is required; with both, the devices of
        both are merged (a device id may appear only once across both).
    type: str
  api_url:
    description:
      - Base URL of a device registry API. The plugin reads C(GET <api_url>/devices?page_size=N)
        and follows each page's C(next) link.
      - 'Every page is a JSON object C({"devices": [...], "next": <URL or null>}) with an
        optional C("sites") mapping.'
      - C(next) may be relative, but must stay on the scheme, host and port of O(api_url);
        redirects are not followed, so the token is never sent to another server.
    type: str
    env:
      - name: EDGEAI_REGISTRY_URL
  api_token:
    description:
      - Bearer token sent in the C(Authorization) header (C(Bearer <token>)) to the registry API.
      - Prefer the environment variable (an AWX credential can inject it) to writing the
        token into the configuration file. It is never written to messages or the cache.
    type: str
    secret: true
    env:
      - name: EDGEAI_REGISTRY_TOKEN
  validate_certs:
    description: Verify the registry API's TLS certificate.
    type: bool
    default: true
    env:
      - name: EDGEAI_REGISTRY_VALIDATE_CERTS
  ca_path:
    description: A PEM file of CA certificates used to verify the registry API's certificate.
    type: path
    env:
      - name: EDGEAI_REGISTRY_CA_PATH
  api_timeout:
    description: Seconds to wait for each registry API request.
    type: int
    default: 30
  api_page_size:
    description: The C(page_size) asked of the registry API for each page.
    type: int
    default: 500
  on_api_error:
    description:
      - What to do when the registry API cannot be read (connection, TLS, HTTP status,
        malformed response).
      - V(fail) stops with an error.
      - V(cache) warns and uses the API data that the last successful run stored in the
        inventory cache; this needs O(cache=true) and fails when there is no cache entry
        (entries older than O(cache_timeout) are gone; C(0) keeps them with the
        C(ansible.builtin.jsonfile) cache plugin).
    type: str
    default: fail
    choices:
      - fail
      - cache
  hostvar_prefix:
    description: Prefix of the host variables the plugin sets from device fields.
    type: str
    default: edge_
  include_sites:
    description:
      - Keep only devices of these sites. Shell-style wildcards (C(*), C(?), C([...])) are allowed.
      - An empty list keeps every site.
    type: list
    elements: str
    default: []
  exclude_sites:
    description: Leave out devices of these sites (wildcards allowed).
    type: list
    elements: str
    default: []
  include_platforms:
    description: Keep only devices of these platforms (wildcards allowed); empty keeps all.
    type: list
    elements: str
    default: []
  exclude_platforms:
    description: Leave out devices of these platforms (wildcards allowed).
    type: list
    elements: str
    default: []
  include_labels:
    description:
      - Keep only devices that carry every one of these labels with one of the given values.
      - Each value is a string or a list of strings (wildcards allowed); label values are
        compared as strings.
    type: dict
    default: {}
  exclude_labels:
    description: Leave out devices that carry any of these labels with one of the given values.
    type: dict
    default: {}
  include_maintenance:
    description: Keep devices whose C(maintenance) flag is set (they are left out by default).
    type: bool
    default: false
  allow_ansible_vars:
    description:
      - C(ansible_*) variables that a device's C(vars) in the registry may set, by exact name
        (no wildcards; letter case counts), for example C([ansible_port]).
      - By default none may. A registry comes from another team or system, and variables such
        as C(ansible_ssh_common_args), C(ansible_connection), C(ansible_become*) or
        C(ansible_python_interpreter) decide what runs where, on the controller too.
        List a name only when the registry is trusted for it.
      - C(ansible_host)/C(ansible_ssh_host), C(ansible_port)/C(ansible_ssh_port) and
        C(ansible_user)/C(ansible_ssh_user)/C(ansible_remote_user) are validated like the
        C(address), C(port) and C(user) fields even when listed here.
    type: list
    elements: str
    default: []
    version_added: 0.1.0
notes:
  - Only the API data is cached; O(source_file) is read on every run. An API answer that the
    checks refuse is not cached, and cached data is checked again when it is read.
  - O(compose) expressions come from the configuration file and are trusted; an expression
    that copies registry data into an C(ansible_*) variable (for example the key
    C(ansible_ssh_common_args) with the expression C(edge_labels.x)) hands that choice to the
    registry again.
  - The C(compose), C(groups) and C(keyed_groups) expressions are evaluated per host only
    when they are set.
"""

EXAMPLES = r"""
# fleet.device_registry.yml: devices from a file next to this configuration
plugin: edgeai.fleet.device_registry
source_file: devices.yml

---
# api.device_registry.yml: devices from the registry API (token in EDGEAI_REGISTRY_TOKEN),
# falling back to the last good answer when the API is down
plugin: edgeai.fleet.device_registry
api_url: https://registry.example.com/api/v1
ca_path: /etc/edgeai/registry-ca.pem
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: ~/.cache/edgeai-device-registry
cache_timeout: 0
on_api_error: cache

---
# Jetson devices of line "a" at the Berlin sites, with extra groups
plugin: edgeai.fleet.device_registry
source_file: devices.yml
include_sites: ['ber-*']
include_platforms: [jetson]
include_labels:
  line: a
keyed_groups:
  - key: edge_labels.line
    prefix: line
compose:
  ansible_python_interpreter: "'/usr/bin/python3'"
"""

from ansible.errors import AnsibleParserError
from ansible.module_utils.basic import missing_required_lib
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable
from ansible_collections.edgeai.fleet.plugins.plugin_utils import _device_registry as reg

_PREFIX_CHARS = frozenset('abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_')


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    NAME = 'edgeai.fleet.device_registry'
    INVENTORY_FILE_SUFFIXES = ('.device_registry.yml', '.device_registry.yaml')

    # Registry values are data, not templates: never mark what the plugin sets as trusted.
    trusted_by_default = False

    def verify_file(self, path):
        return super().verify_file(path) and path.endswith(self.INVENTORY_FILE_SUFFIXES)

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache=cache)
        with reg.gc_paused():
            self._parse(path, cache)

    def _parse(self, path, cache):
        if not reg.HAS_NETADDR:
            raise AnsibleParserError(missing_required_lib('netaddr'))
        self._read_config_data(path)

        prefix = self.get_option('hostvar_prefix') or ''
        if not set(prefix) <= _PREFIX_CHARS or prefix[:1].isdigit():
            raise AnsibleParserError(
                f'{path}: hostvar_prefix {prefix!r} must contain only letters, digits and "_"'
                ' and not start with a digit'
            )
        if prefix.lower().startswith('ansible_'):
            raise AnsibleParserError(
                f'{path}: hostvar_prefix {prefix!r} would put registry data into ansible_* variables;'
                ' choose another prefix (the default is edge_)'
            )
        try:
            allow_vars = reg.check_allow_list(self.get_option('allow_ansible_vars'))
        except reg.RegistryError as e:
            raise AnsibleParserError(f'{path}: {e}') from None
        source_file = self.get_option('source_file')
        api_url = self.get_option('api_url')
        if not source_file and not api_url:
            raise AnsibleParserError(f'{path}: set source_file, api_url or both')

        unknown = reg.UnknownFields()
        self._fetched = None
        try:
            batches = []
            plans: dict = {}
            plans_from = None
            if source_file:
                file_path = reg.resolve_source_file(path, source_file)
                sites, records = reg.split_document(reg.load_registry_file(file_path), file_path, unknown)
                plans = reg.parse_sites(sites, file_path, unknown)
                plans_from = file_path
                batches.append((records, reg.Source(file_path, file_path)))
            if api_url:
                data = self._api_data(path, cache, api_url)
                label = f'registry API {reg.redact_url(api_url)}'
                api_plans = reg.parse_sites(data.get('sites') or {}, label, unknown)
                plans = reg.merge_sites(plans, api_plans, plans_from, label) if plans_from else api_plans
                batches.append((data.get('devices') or [], reg.Source(label)))
            devices = reg.build_devices(batches, plans, unknown, allow_vars)
            if self._fetched is not None:  # cache only API data that passed the checks
                self.cache[self._fetched[0]] = self._fetched[1]
        except reg.RegistryError as e:
            raise AnsibleParserError(str(e)) from None
        finally:
            for message in unknown.messages():
                self.display.warning(message)

        filters = self._filters()
        devices = reg.rollout_order([d for d in devices if filters.keep(d)])
        self._populate(devices, prefix)

    def _filters(self):
        include_labels = self.get_option('include_labels') or {}
        exclude_labels = self.get_option('exclude_labels') or {}
        for name, value in (('include_labels', include_labels), ('exclude_labels', exclude_labels)):
            for key, accepted in value.items():
                if isinstance(accepted, (dict, bool)) or accepted is None:
                    raise AnsibleParserError(
                        f'{name}: label {key!r} must map to a string or a list of strings, got {accepted!r}'
                    )
        return reg.Filters(
            include_sites=self.get_option('include_sites') or [],
            exclude_sites=self.get_option('exclude_sites') or [],
            include_platforms=self.get_option('include_platforms') or [],
            exclude_platforms=self.get_option('exclude_platforms') or [],
            include_labels=include_labels,
            exclude_labels=exclude_labels,
            include_maintenance=self.get_option('include_maintenance'),
        )

    def _api_data(self, path, cache, api_url):
        """Registry API data: from the cache when enabled and not refreshed, else fetched (and cached)."""
        caching = self.get_option('cache')
        key = self.get_cache_key(path)
        if caching and cache:
            cached = self._cached_api_data(key)
            if cached is not None:
                return cached
        for option in ('api_page_size', 'api_timeout'):
            if self.get_option(option) < 1:
                raise reg.RegistryError(f'{option} must be at least 1, got {self.get_option(option)}')
        if api_url.startswith('http://') and self.get_option('api_token'):
            self.display.warning(f'device registry: sending the API token over plain http to {reg.redact_url(api_url)}')
        from ansible.module_utils.urls import open_url  # only needed (and imported) when an API is used

        try:
            data = reg.fetch_api(
                api_url,
                token=self.get_option('api_token'),
                validate_certs=self.get_option('validate_certs'),
                ca_path=self.get_option('ca_path'),
                timeout=self.get_option('api_timeout'),
                page_size=self.get_option('api_page_size'),
                open_url=open_url,
            )
        except reg.RegistryApiError as e:
            if self.get_option('on_api_error') != 'cache':
                raise
            if not caching:
                raise reg.RegistryApiError(
                    f'{e} (on_api_error=cache needs cache: true to have data to fall back to)'
                ) from None
            data = self._cached_api_data(key)
            if data is None:
                raise reg.RegistryApiError(f'{e}, and the inventory cache holds no earlier registry data') from None
            self.display.warning(f'device registry: {e}; using the registry data cached by an earlier run')
            return data
        if caching:
            self._fetched = (key, data)  # cached by _parse once the devices pass the checks
        return data

    def _cached_api_data(self, key):
        """The API data an earlier run cached, or None (absent, expired, or not what this plugin wrote)."""
        try:
            data = self.cache[key]
        except KeyError:
            return None
        if not isinstance(data, dict) or not isinstance(data.get('devices'), list):
            return None
        return data

    def _populate(self, devices, prefix):
        data = getattr(self.inventory, '__wrapped__', self.inventory)
        # a device may not take over a host that an earlier inventory source defined (its
        # address and variables would become the registry's)
        for d in devices:
            if d.id in data.hosts:
                raise AnsibleParserError(
                    f'device {d.where}: a host named {d.id!r} is already defined by another inventory'
                    ' source; a registry device may not take it over: rename the device or the other host'
                )
        hosts_before = set(data.hosts)
        groups_before = set(data.groups)
        try:
            self._add_devices(data, devices, prefix)
        except Exception:
            # ansible keeps what a failed source added (and, by default, only warns): take it
            # out again, so that a refused registry contributes no hosts and no groups
            self._roll_back(data, hosts_before, groups_before)
            raise

    @staticmethod
    def _roll_back(data, hosts_before, groups_before):
        for name in [n for n in data.hosts if n not in hosts_before]:
            data.remove_host(data.hosts[name])
        for name in [n for n in data.groups if n not in groups_before]:
            group = data.groups[name]
            for parent in group.parent_groups:
                if group in parent.child_groups:
                    parent.child_groups.remove(group)
                    parent.clear_hosts_cache()
            for child in group.child_groups:
                if group in child.parent_groups:
                    child.parent_groups.remove(group)
            data.remove_group(group)

    def _sanitize_group_name(self, name):
        """Group names of groups and keyed_groups (keyed groups are named from registry data):
        never one that Ansible gives the controller, which `hosts: localhost` would match."""
        name = super()._sanitize_group_name(name)
        if isinstance(name, str) and name.lower() in reg.CONTROLLER_NAMES:
            raise AnsibleParserError(
                f'group {name!r} (from groups or keyed_groups) has a name Ansible gives the controller:'
                ' plays for localhost would run on its hosts; give the keyed group a prefix or rename it'
            )
        return name

    def _add_devices(self, data, devices, prefix):
        inventory = self.inventory
        k_site, k_platform, k_hardware, k_ring, k_labels, k_maintenance, k_order = (
            prefix + name for name in ('site', 'platform', 'hardware', 'ring', 'labels', 'maintenance', 'rollout_order')
        )

        # create the default groups once, in name order
        group_of: dict = {}
        for d in devices:
            for kind, value in (('site', d.site), ('platform', d.platform), ('hardware', d.hardware), ('ring', d.ring)):
                if (kind, value) not in group_of:
                    group_of[(kind, value)] = reg.sanitize_group_name(f'{kind}_{value}')
        for name in sorted(set(group_of.values())):
            inventory.add_group(name)

        compose = self.get_option('compose')
        groups = self.get_option('groups')
        keyed_groups = self.get_option('keyed_groups')
        constructed = bool(compose or groups or keyed_groups)
        strict = self.get_option('strict')

        # ansible-core wraps the inventory so that set_variable() walks, copies and tags every
        # value, to apply template trust for plugins that do not manage trust themselves. This
        # plugin does: registry values are plain, untagged JSON/YAML data and must stay
        # untrusted. Setting them on the hosts of the inventory data itself keeps them exactly
        # so and is about three times faster at fleet scale (tests check they are not trusted).
        add_child = data.add_child
        for order, d in enumerate(devices, start=1):
            host = inventory.add_host(d.id, group="all")  # "all" lists hosts in rollout order
            hostvars = {
                'ansible_host': d.host,
                k_site: d.site,
                k_platform: d.platform,
                k_hardware: d.hardware,
                k_ring: d.ring,
                k_labels: d.labels,
                k_maintenance: d.maintenance,
                k_order: order,
            }
            if d.port is not None:
                hostvars['ansible_port'] = d.port
            if d.user is not None:
                hostvars['ansible_user'] = d.user
            if d.vars:
                hostvars.update(d.vars)
            set_variable = data.hosts[host].set_variable
            for name, value in hostvars.items():
                set_variable(name, value)
            add_child(group_of[('site', d.site)], host)
            add_child(group_of[('platform', d.platform)], host)
            add_child(group_of[('hardware', d.hardware)], host)
            add_child(group_of[('ring', d.ring)], host)
            if constructed:
                self._set_composite_vars(compose, hostvars, host, strict=strict)
                self._add_host_to_composed_groups(groups, hostvars, host, strict=strict)
                self._add_host_to_keyed_groups(keyed_groups, hostvars, host, strict=strict)
