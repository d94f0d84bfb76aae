# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to the edgeai.fleet collection: not a public API, may change without notice.

Reading, validating and ordering device registry data for the
``edgeai.fleet.device_registry`` inventory plugin. Nothing here touches Ansible's
inventory; the plugin does that. Errors are raised as :class:`RegistryError`
(bad data) or :class:`RegistryApiError` (the API could not be read).
"""

from __future__ import annotations

import contextlib
import gc
import http.client
import json
import os
import re
import ssl
import typing as t
import urllib.error
from fnmatch import fnmatchcase
from urllib.parse import urlencode, urljoin, urlsplit, urlunsplit

import yaml

try:
    import netaddr

    HAS_NETADDR = True
except ImportError:  # pragma: no cover - reported by the plugin
    netaddr = None
    HAS_NETADDR = False

try:
    _YamlLoader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _YamlLoader = yaml.SafeLoader

DEVICE_FIELDS = frozenset(
    ('id', 'site', 'platform', 'hardware', 'address', 'index', 'port', 'user', 'ring', 'labels', 'maintenance', 'vars')
)
SITE_FIELDS = frozenset(('address_plan',))
ADDRESS_PLAN_FIELDS = frozenset(('subnet', 'start'))
TOP_LEVEL_FIELDS = frozenset(('sites', 'devices'))

DEFAULT_RING = 'broad'
# Rings rolled out first, in this order; any other ring follows, sorted by name.
RING_PRECEDENCE = ('canary', 'early', 'broad')

# Used with fullmatch(): a "$" would also match before a trailing newline.
_DEVICE_ID = re.compile(r'[A-Za-z0-9][A-Za-z0-9._-]*')
_HOST_LABEL = re.compile(r'(?!-)[A-Za-z0-9-]{1,63}(?<!-)')
# A plain login name: no option-like leading "-", no "@", "%" (ssh tokens), spaces or controls.
_USER = re.compile(r'[A-Za-z0-9_][A-Za-z0-9._-]{0,63}')
_VAR_NAME = re.compile(r'[A-Za-z_][A-Za-z0-9_]*')
_GROUP_UNSAFE = re.compile(r'[^A-Za-z0-9_]')
_MAX_PAGES = 10000


# Names Ansible gives the controller itself (ansible.constants.LOCALHOST): a registry host
# with one of these names is what `hosts: localhost` and `delegate_to: localhost` resolve to.
CONTROLLER_NAMES = frozenset(('localhost', '127.0.0.1', '::1'))

# Variables whose value the plugin validates the way it validates the fields they come from,
# also when allow_ansible_vars lets a registry set them directly.
_ADDRESS_VARS = frozenset(('ansible_host', 'ansible_ssh_host'))
_PORT_VARS = frozenset(('ansible_port', 'ansible_ssh_port'))
_USER_VARS = frozenset(('ansible_user', 'ansible_ssh_user', 'ansible_remote_user'))

# Ansible's magic variables that do not start with ansible_ (the engine sets them; a registry
# value would only shadow them where the engine does not, e.g. in compose expressions).
MAGIC_VARS = frozenset((
    'group_names', 'groups', 'hostvars', 'inventory_dir', 'inventory_file', 'inventory_hostname',
    'inventory_hostname_short', 'omit', 'play_hosts', 'playbook_dir', 'role_name', 'role_names', 'role_path',
))


def _reserved_names() -> frozenset:
    """Playbook keywords and template globals (lookup, query, omit, ...): a variable of that name
    shadows them (a registry var "lookup" breaks every lookup() for that host)."""
    try:
        from ansible.vars.reserved import get_reserved_names
    except ImportError:  # pragma: no cover - ansible-core always has it
        return frozenset()
    return frozenset(get_reserved_names())


RESERVED_NAMES = _reserved_names() | MAGIC_VARS


class RegistryError(Exception):
    """The registry data is malformed or inconsistent."""


class RegistryApiError(RegistryError):
    """The registry API could not be read (network, TLS, HTTP status, response shape)."""


class Device(t.NamedTuple):
    id: str
    site: str
    platform: str
    hardware: str
    host: str
    port: int | None
    user: str | None
    ring: str
    labels: dict
    maintenance: bool
    vars: dict
    where: Where


class Source:
    """Where records come from: a file (line numbers looked up only when a message needs them) or the API."""

    def __init__(self, label: str, path: str | None = None) -> None:
        self.label = label
        self.path = path
        self._lines: dict[int, int] | None = None

    def describe(self, index: int) -> str:
        if self.path is not None:
            if self._lines is None:
                self._lines = device_lines(self.path)
            line = self._lines.get(index)
            if line is not None:
                return f'devices[{index}] of {self.label}, line {line}'
        return f'devices[{index}] of {self.label}'


class Where:
    """A device's position, rendered only when an error or warning is shown."""

    __slots__ = ('source', 'index', 'device_id')

    def __init__(self, source: Source, index: int, device_id: str | None = None) -> None:
        self.source = source
        self.index = index
        self.device_id = device_id

    def __str__(self) -> str:
        position = self.source.describe(self.index)
        if self.device_id is None:
            return position
        return f'{self.device_id!r} ({position})'


class UnknownFields:
    """Collects unknown field names so that each is reported once, not once per device."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], list] = {}

    def add(self, kind: str, name: str, where: t.Any) -> None:
        entry = self._seen.get((kind, name))
        if entry is None:
            self._seen[(kind, name)] = [1, where]
        else:
            entry[0] += 1

    def messages(self) -> list[str]:
        out = []
        for (kind, name), (count, where) in sorted(self._seen.items()):
            more = f' and {count - 1} more' if count > 1 else ''
            out.append(f'device registry: ignoring unknown {kind} field {name!r} (in {where}{more})')
        return out


@contextlib.contextmanager
def gc_paused():
    """Pause Python's cyclic garbage collector while a large registry is loaded and added.

    Loading and adding ten thousand devices allocates a few hundred thousand containers that
    all stay alive; the collector would walk them again and again (for YAML that is most of
    the load time). Nothing in here creates garbage cycles worth collecting early, and the
    previous state is restored afterwards.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def sanitize_group_name(name: str) -> str:
    """Make a valid Ansible group name: anything but letters, digits and _ becomes _."""
    return _GROUP_UNSAFE.sub('_', name)


# --------------------------------------------------------------------------- files


def load_registry_file(path: str) -> t.Any:
    """Load a YAML or JSON registry file; errors name the file and the line."""
    try:
        with open(path, 'rb') as f:
            raw = f.read()
    except OSError as e:
        raise RegistryError(f'cannot read device registry file {path}: {e.strerror or e}') from e
    if path.endswith('.json'):
        try:
            return json.loads(raw)
        except ValueError as e:
            line = getattr(e, 'lineno', None)
            col = getattr(e, 'colno', None)
            at = f' at line {line}, column {col}' if line else ''
            msg = getattr(e, 'msg', str(e))
            raise RegistryError(f'malformed JSON in device registry file {path}{at}: {msg}') from e
    try:
        text: str | bytes = raw.decode('utf-8')  # libyaml reads a str a little faster than bytes
    except UnicodeDecodeError:
        text = raw  # let libyaml detect UTF-16 or report the bad bytes
    try:
        return yaml.load(text, Loader=_YamlLoader)  # SafeLoader or CSafeLoader
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        at = f' at line {mark.line + 1}, column {mark.column + 1}' if mark else ''
        problem = e.problem or e.context or 'syntax error'
        raise RegistryError(f'malformed YAML in device registry file {path}{at}: {problem}') from e
    except yaml.YAMLError as e:
        raise RegistryError(f'malformed YAML in device registry file {path}: {e}') from e


def device_lines(path: str) -> dict[int, int]:
    """Map each index of the top-level ``devices`` list to its 1-based line (slow path, errors only)."""
    try:
        with open(path, 'rb') as f:
            node = yaml.compose(f, Loader=_YamlLoader)
    except (OSError, yaml.YAMLError):
        return {}
    if not isinstance(node, yaml.MappingNode):
        return {}
    for key, value in node.value:
        if getattr(key, 'value', None) == 'devices' and isinstance(value, yaml.SequenceNode):
            return {i: item.start_mark.line + 1 for i, item in enumerate(value.value)}
    return {}


def split_document(data: t.Any, label: str, unknown: UnknownFields) -> tuple[dict, list]:
    """Return (sites, devices) from a loaded registry document."""
    if data is None:
        return {}, []
    if not isinstance(data, dict):
        raise RegistryError(
            f'{label}: expected a mapping with "devices" (and optional "sites"), got {type(data).__name__}'
        )
    for key in data:
        if key not in TOP_LEVEL_FIELDS:
            unknown.add('top-level', str(key), label)
    sites = data.get('sites') or {}
    devices = data.get('devices') or []
    if not isinstance(sites, dict):
        raise RegistryError(f'{label}: "sites" must be a mapping of site name to settings')
    if not isinstance(devices, list):
        raise RegistryError(f'{label}: "devices" must be a list')
    return sites, devices


# --------------------------------------------------------------------------- sites


class AddressPlan(t.NamedTuple):
    network: t.Any  # netaddr.IPNetwork
    start: int


def parse_sites(sites: dict, label: str, unknown: UnknownFields) -> dict[str, AddressPlan | None]:
    plans: dict[str, AddressPlan | None] = {}
    for name, settings in sites.items():
        if not isinstance(name, str) or not name:
            raise RegistryError(f'{label}: site names must be non-empty strings, got {name!r}')
        if settings is None:
            plans[name] = None
            continue
        if not isinstance(settings, dict):
            raise RegistryError(f'{label}: settings of site {name!r} must be a mapping')
        for key in settings:
            if key not in SITE_FIELDS:
                unknown.add('site', str(key), f'{label}, site {name!r}')
        plan = settings.get('address_plan')
        if plan is None:
            plans[name] = None
            continue
        if not isinstance(plan, dict) or 'subnet' not in plan:
            raise RegistryError(
                f'{label}: address_plan of site {name!r} must be a mapping with "subnet" (and optional "start")'
            )
        for key in plan:
            if key not in ADDRESS_PLAN_FIELDS:
                unknown.add('address_plan', str(key), f'{label}, site {name!r}')
        try:
            network = netaddr.IPNetwork(str(plan['subnet']))
        except (netaddr.AddrFormatError, ValueError, TypeError) as e:
            raise RegistryError(
                f'{label}: address_plan of site {name!r} has an invalid subnet {plan["subnet"]!r}: {e}'
            ) from e
        start = plan.get('start', 0)
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise RegistryError(
                f'{label}: address_plan.start of site {name!r} must be a non-negative integer, got {start!r}'
            )
        plans[name] = AddressPlan(network, start)
    return plans


def merge_sites(first: dict, second: dict, first_label: str, second_label: str) -> dict:
    merged = dict(first)
    for name, plan in second.items():
        if name in merged and merged[name] != plan:
            raise RegistryError(f'site {name!r} is defined differently in {first_label} and in {second_label}')
        merged[name] = plan
    return merged


# --------------------------------------------------------------------------- devices


def valid_address(address: str) -> bool:
    """True for an IPv4/IPv6 address (checked with netaddr) or an RFC 1123 host name.

    Nothing else: no spaces, control characters, option-like "-..." or "%scope" parts.
    """
    if not isinstance(address, str) or not address or not address.isascii() or not address.isprintable():
        return False
    if ' ' in address:
        return False
    try:
        if netaddr.valid_ipv4(address) or netaddr.valid_ipv6(address):
            return True
    except ValueError:  # netaddr raises on some odd strings instead of answering False
        return False
    if len(address) > 253:
        return False
    labels = address[:-1].split('.') if address.endswith('.') else address.split('.')
    # a name whose last label is all digits is a mistyped IPv4 address (10.0.0.256, 10.1)
    if labels[-1].isdigit():
        return False
    for label in labels:
        if not _HOST_LABEL.fullmatch(label):
            return False
    return True


def valid_user(user: str) -> bool:
    """True for a plain login name: letters, digits, ".", "_" and "-", not starting with "-" or "."."""
    return isinstance(user, str) and _USER.fullmatch(user) is not None


def valid_port(port: t.Any) -> int | None:
    """The port as an int when it is one in 1..65535 (an int or a string of digits), else None."""
    if isinstance(port, str) and port.isascii() and port.isdigit():
        port = int(port)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        return None
    return port


def check_allow_list(allow: t.Any) -> frozenset:
    """Validate the allow_ansible_vars option: exact ansible_* variable names only."""
    names = set()
    for name in allow or ():
        if (not isinstance(name, str) or not _VAR_NAME.fullmatch(name) or not name.startswith('ansible_')
                or name in RESERVED_NAMES):
            raise RegistryError(
                f'allow_ansible_vars: {name!r} is not an ansible_* variable name; list exact names such as'
                ' ansible_port (no wildcards). Other variable names need no entry, and reserved names'
                ' cannot be allowed'
            )
        names.add(name)
    return frozenset(names)


_WHAT_TO_DO = (
    'remove it from the registry, or, if the registry is trusted to set it, list it in the'
    ' allow_ansible_vars option of the inventory configuration'
)


def check_vars(extra: dict, where: t.Any, allow: frozenset) -> dict:
    """Refuse registry vars that could change how Ansible connects or runs code: any ansible_*
    name (whatever its case) outside ``allow``, reserved and magic names, names that are not
    plain variable names. Allowed address/port/user variables are validated like the fields."""
    for key, value in extra.items():
        if not _VAR_NAME.fullmatch(key):
            raise RegistryError(
                f'device {where}: vars key {key!r} is not a valid variable name (letters, digits and "_",'
                ' not starting with a digit); rename or remove it'
            )
        if key.lower().startswith('ansible_') and key not in allow:
            raise RegistryError(
                f'device {where}: vars key {key!r} is refused: registry data may not set ansible_* variables'
                f' (connection, become, interpreter, shell, executables and the like); {_WHAT_TO_DO}'
            )
        if key in RESERVED_NAMES:
            raise RegistryError(
                f'device {where}: vars key {key!r} is refused: it is a name Ansible reserves (a playbook'
                ' keyword, template function or magic variable) and would shadow it; rename or remove it'
            )
        if key in _ADDRESS_VARS and not valid_address(value):
            raise RegistryError(
                f'device {where}: vars key {key!r} has an invalid address {value!r}'
                ' (expected an IPv4/IPv6 address or a host name)'
            )
        if key in _PORT_VARS and valid_port(value) is None:
            raise RegistryError(
                f'device {where}: vars key {key!r} must be a port, an integer between 1 and 65535, got {value!r}'
            )
        if key in _USER_VARS and not valid_user(value):
            raise RegistryError(
                f'device {where}: vars key {key!r} has an invalid user {value!r} (a plain user name must'
                ' be letters, digits, ".", "_" and "-", not start with "-" or ".", at most 64 characters)'
            )
    return extra


def _string(record: dict, key: str, where: t.Any, required: bool = False, default: str | None = None) -> str | None:
    value = record.get(key)
    if value is None:
        if required:
            raise RegistryError(f'device {where}: missing required field {key!r}')
        return default
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise RegistryError(f'device {where}: field {key!r} must be a string, got {type(value).__name__}')
    value = str(value)
    if not value:
        if required:
            raise RegistryError(f'device {where}: field {key!r} must not be empty')
        return default
    if not value.isprintable():
        raise RegistryError(
            f'device {where}: field {key!r} contains control or invisible characters: {value!r}'
        )
    return value


def _bool(value: t.Any, where: t.Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    if isinstance(value, str) and value.lower() in ('true', 'yes', 'on', '1', 'false', 'no', 'off', '0'):
        return value.lower() in ('true', 'yes', 'on', '1')
    raise RegistryError(f'device {where}: field {key!r} must be a boolean, got {value!r}')


def build_device(
    record: t.Any, where: Where, plans: dict, unknown: UnknownFields, allow_vars: frozenset = frozenset()
) -> Device:
    """Validate one raw device record; ``where`` says where it came from for messages.

    Registry data is data, never code: ``vars`` may set an ``ansible_*`` variable only when it
    is in ``allow_vars``, and the fields mapped to ansible_host/port/user are validated strictly.
    """
    if not isinstance(record, dict):
        raise RegistryError(f'device {where}: expected a mapping, got {type(record).__name__}')
    for key in record:
        if key not in DEVICE_FIELDS:
            unknown.add('device', str(key), where)

    device_id = _string(record, 'id', where, required=True)
    if not _DEVICE_ID.fullmatch(device_id):
        raise RegistryError(
            f'device {where}: id {device_id!r} may only contain letters, digits, ".", "_" and "-"'
            ' and must start with a letter or digit'
        )
    where = Where(where.source, where.index, device_id)
    if device_id.lower() in CONTROLLER_NAMES:
        raise RegistryError(
            f'device {where}: the name {device_id!r} is the one Ansible gives the controller itself'
            ' (localhost, 127.0.0.1, ::1); a registry device may not take it (plays for localhost would'
            ' run with its variables): rename the device'
        )
    site = _string(record, 'site', where, required=True)
    platform = _string(record, 'platform', where, required=True)
    hardware = _string(record, 'hardware', where, required=True)
    ring = _string(record, 'ring', where, default=DEFAULT_RING)
    user = _string(record, 'user', where)
    if user is not None and not valid_user(user):
        raise RegistryError(
            f'device {where}: invalid user {user!r} (a plain user name: letters, digits, ".", "_" and "-",'
            ' not starting with "-" or ".", at most 64 characters)'
        )

    address = record.get('address')
    index = record.get('index')
    if address is not None and index is not None:
        raise RegistryError(f'device {where}: give either "address" or "index", not both')
    if address is not None:
        if not isinstance(address, str) or not valid_address(address):
            raise RegistryError(
                f'device {where}: invalid address {address!r} (expected an IPv4/IPv6 address or a host name)'
            )
        host = address
    elif index is not None:
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise RegistryError(f'device {where}: index must be a non-negative integer, got {index!r}')
        plan = plans.get(site)
        if plan is None:
            raise RegistryError(f'device {where}: has an index but site {site!r} has no address_plan')
        offset = plan.start + index
        if offset >= plan.network.size:
            raise RegistryError(
                f'device {where}: index {index} (start {plan.start}) is outside subnet {plan.network} of site {site!r}'
                f' ({plan.network.size} addresses)'
            )
        host = str(plan.network[offset])
    else:
        raise RegistryError(f'device {where}: missing "address" (or an "index" into its site\'s address_plan)')

    port = record.get('port')
    if port is not None:
        checked = valid_port(port)
        if checked is None:
            raise RegistryError(f'device {where}: port must be an integer between 1 and 65535, got {port!r}')
        port = checked

    labels = record.get('labels')
    if labels is None:
        labels = {}
    elif not isinstance(labels, dict) or not all(isinstance(k, str) for k in labels):
        raise RegistryError(f'device {where}: labels must be a mapping with string keys')

    extra = record.get('vars')
    if extra is None:
        extra = {}
    elif not isinstance(extra, dict) or not all(isinstance(k, str) for k in extra):
        raise RegistryError(f'device {where}: vars must be a mapping with string keys')
    else:
        check_vars(extra, where, allow_vars)

    maintenance = _bool(record.get('maintenance'), where, 'maintenance')
    return Device(device_id, site, platform, hardware, host, port, user, ring, labels, maintenance, extra, where)


def build_devices(
    batches: list[tuple[list, Source]], plans: dict, unknown: UnknownFields, allow_vars: frozenset = frozenset()
) -> list[Device]:
    """Validate all records of all sources; a duplicate id is an error naming both places."""
    seen: dict[str, Where] = {}
    devices = []
    for records, source in batches:
        for index, record in enumerate(records):
            device = build_device(record, Where(source, index), plans, unknown, allow_vars)
            first = seen.get(device.id)
            if first is not None:
                raise RegistryError(
                    f'duplicate device id {device.id!r}: {first.source.describe(first.index)}'
                    f' and {source.describe(index)}'
                )
            seen[device.id] = device.where
            devices.append(device)
    return devices


# --------------------------------------------------------------------------- filters


def _match(value: str, patterns: list) -> bool:
    for pattern in patterns:
        pattern = str(pattern)
        if value == pattern or (('*' in pattern or '?' in pattern or '[' in pattern) and fnmatchcase(value, pattern)):
            return True
    return False


def _labels_match(labels: dict, wanted: dict) -> bool:
    """True when every wanted label is present with one of the wanted values."""
    for key, accepted in wanted.items():
        if key not in labels:
            return False
        values = accepted if isinstance(accepted, list) else [accepted]
        if not _match(str(labels[key]), values):
            return False
    return True


def _labels_any(labels: dict, unwanted: dict) -> bool:
    """True when any unwanted label is present with one of the unwanted values."""
    for key, rejected in unwanted.items():
        if key in labels:
            values = rejected if isinstance(rejected, list) else [rejected]
            if _match(str(labels[key]), values):
                return True
    return False


class Filters(t.NamedTuple):
    include_sites: list
    exclude_sites: list
    include_platforms: list
    exclude_platforms: list
    include_labels: dict
    exclude_labels: dict
    include_maintenance: bool

    def keep(self, d: Device) -> bool:
        if d.maintenance and not self.include_maintenance:
            return False
        if self.include_sites and not _match(d.site, self.include_sites):
            return False
        if self.exclude_sites and _match(d.site, self.exclude_sites):
            return False
        if self.include_platforms and not _match(d.platform, self.include_platforms):
            return False
        if self.exclude_platforms and _match(d.platform, self.exclude_platforms):
            return False
        if self.include_labels and not _labels_match(d.labels, self.include_labels):
            return False
        if self.exclude_labels and _labels_any(d.labels, self.exclude_labels):
            return False
        return True


# --------------------------------------------------------------------------- rollout order


def ring_rank(ring: str) -> tuple[int, str]:
    try:
        return (RING_PRECEDENCE.index(ring), '')
    except ValueError:
        return (len(RING_PRECEDENCE), ring)


def rollout_order(devices: list[Device]) -> list[Device]:
    """Rings canary, early, broad, then the others by name; within a ring, sites round robin.

    Sites are visited in name order and devices of a site in id order, so consecutive
    hosts come from different sites for as long as more than one site has devices left.
    """
    rings: dict[str, dict[str, list[Device]]] = {}
    for d in devices:
        rings.setdefault(d.ring, {}).setdefault(d.site, []).append(d)
    ordered: list[Device] = []
    for ring in sorted(rings, key=ring_rank):
        per_site = [sorted(rings[ring][site], key=lambda d: d.id) for site in sorted(rings[ring])]
        longest = max(len(s) for s in per_site)
        for i in range(longest):
            for site_devices in per_site:
                if i < len(site_devices):
                    ordered.append(site_devices[i])
    return ordered


# --------------------------------------------------------------------------- API


def redact_url(url: str) -> str:
    """The URL without any user:password part, for messages."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        netloc = parts.hostname or ''
        if parts.port:
            netloc += f':{parts.port}'
        parts = parts._replace(netloc=netloc)
    return urlunsplit(parts)


def first_page_url(api_url: str, page_size: int) -> str:
    return f'{api_url.rstrip("/")}/devices?{urlencode({"page_size": page_size})}'


def fetch_api(
    api_url: str,
    token: str | None,
    validate_certs: bool,
    ca_path: str | None,
    timeout: int,
    page_size: int,
    open_url: t.Callable[..., t.Any],
) -> dict:
    """Read every page of ``GET <api_url>/devices``; return {"sites": {...}, "devices": [...]}.

    Each page is ``{"devices": [...], "next": <url or null>, "sites": {...}}`` (sites optional).
    ``next`` may be relative; it must stay on the scheme, host and port of ``api_url`` so the
    token is never sent elsewhere. Redirects are not followed, for the same reason.
    """
    from ansible.module_utils.urls import ConnectionError as UrlsConnectionError

    origin = urlsplit(api_url)[:2]
    url = first_page_url(api_url, page_size)
    headers = {'Accept': 'application/json'}
    if token:
        headers['Authorization'] = f'Bearer {token}'
    sites: dict = {}
    devices: list = []
    seen: set[str] = set()
    for page in range(1, _MAX_PAGES + 1):
        if url in seen:
            raise RegistryApiError(f'registry API pagination loops back to {redact_url(url)}')
        seen.add(url)
        shown = redact_url(url)
        try:
            response = open_url(
                url,
                method='GET',
                headers=headers,
                validate_certs=validate_certs,
                ca_path=ca_path,
                timeout=timeout,
                follow_redirects='none',
                http_agent='edgeai.fleet-device_registry',
            )
            try:
                body = response.read()
            finally:
                response.close()
        except urllib.error.HTTPError as e:
            raise RegistryApiError(f'registry API {shown} answered HTTP {e.code} {e.reason}') from None
        except urllib.error.URLError as e:
            raise RegistryApiError(f'registry API {shown} is unreachable: {e.reason}') from None
        except TimeoutError as e:
            raise RegistryApiError(f'registry API {shown} timed out after {timeout}s: {e}') from None
        except (ssl.SSLError, http.client.HTTPException, OSError, UrlsConnectionError) as e:
            raise RegistryApiError(f'registry API {shown} failed: {e}') from None
        try:
            payload = json.loads(body)
        except ValueError as e:
            raise RegistryApiError(f'registry API {shown} returned malformed JSON: {e}') from None
        if not isinstance(payload, dict) or not isinstance(payload.get('devices'), list):
            raise RegistryApiError(f'registry API {shown} returned no "devices" list (page {page})')
        page_sites = payload.get('sites') or {}
        if not isinstance(page_sites, dict):
            raise RegistryApiError(f'registry API {shown} returned "sites" that is not a mapping (page {page})')
        for name, settings in page_sites.items():
            if name in sites and sites[name] != settings:
                raise RegistryApiError(f'registry API defines site {name!r} differently on two pages')
            sites[name] = settings
        devices.extend(payload['devices'])
        nxt = payload.get('next')
        if not nxt:
            return {'sites': sites, 'devices': devices}
        if not isinstance(nxt, str):
            raise RegistryApiError(f'registry API {shown} returned a "next" that is not a URL: {nxt!r}')
        url = urljoin(url, nxt)
        if urlsplit(url)[:2] != origin:
            raise RegistryApiError(
                f'registry API {shown} points "next" to another server ({redact_url(url)});'
                ' refusing to send the token there'
            )
    raise RegistryApiError(f'registry API {redact_url(api_url)} returned more than {_MAX_PAGES} pages')


def resolve_source_file(config_path: str, source_file: str) -> str:
    source_file = os.path.expanduser(source_file)
    if os.path.isabs(source_file):
        return source_file
    return os.path.join(os.path.dirname(os.path.abspath(config_path)), source_file)
