# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fixtures for the device_registry inventory plugin tests.

The plugin is exercised through ansible's own machinery: InventoryManager with a DataLoader
in-process, and the ansible-inventory CLI in a subprocess. The registry API is a real HTTPS
server on 127.0.0.1 started by the test (TLS from a trustme CA, bearer token, pagination and
switchable failure modes).
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import trustme
import yaml
from device_registry_helpers import PLUGIN, REPO, TOKEN, ansible_env


def _collections_dir(tmp_root: Path) -> Path:
    """A collections dir holding ansible_collections/edgeai/fleet -> this checkout."""
    made = REPO / '.collections'
    if (made / 'ansible_collections' / 'edgeai' / 'fleet' / 'galaxy.yml').exists():
        return made
    link = tmp_root / 'ansible_collections' / 'edgeai' / 'fleet'
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(REPO)
    return tmp_root


@pytest.fixture(scope='session')
def collections_dir(tmp_path_factory) -> Path:
    return _collections_dir(tmp_path_factory.mktemp('collections'))


@pytest.fixture(scope='session')
def plugin_loader(collections_dir):
    """Install ansible's collection loader, so InventoryManager finds edgeai.fleet.device_registry
    by its FQCN the way ansible does."""
    from ansible.plugins.loader import init_plugin_loader
    from ansible.utils.collection_loader import AnsibleCollectionConfig

    if AnsibleCollectionConfig.collection_finder is None:
        # Tests collected before this one may have imported ansible_collections.* as plain
        # packages (pyproject's pythonpath); the collection loader cannot extend those, so let
        # it import them afresh. Modules already imported by other tests keep working.
        for name in [n for n in sys.modules if n == 'ansible_collections' or n.startswith('ansible_collections.')]:
            del sys.modules[name]
        init_plugin_loader([str(collections_dir)])
    return collections_dir


@pytest.fixture
def warnings(monkeypatch):
    """Warnings shown through ansible's Display during the test."""
    from ansible.utils.display import Display

    seen: list[str] = []
    monkeypatch.setattr(Display, 'warning', lambda self, msg, *a, **k: seen.append(str(msg)))
    return seen


@pytest.fixture
def load_inventory(plugin_loader, monkeypatch):
    """Parse an inventory source with InventoryManager; raise the plugin's error if it failed."""
    from ansible import constants as C
    from ansible.errors import AnsibleError
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader

    monkeypatch.setattr(C, 'INVENTORY_ENABLED', [PLUGIN])
    monkeypatch.setattr(C, 'INVENTORY_UNPARSED_IS_FAILED', True)
    monkeypatch.setattr(C, 'INVENTORY_ANY_UNPARSED_IS_FAILED', True)

    from ansible.utils.display import Display

    def load(config: Path, cache: bool = True):
        # The manager shows a plugin's failure with Display.error_as_warning, then raises a
        # generic "Completely failed to parse"; put the plugin's own error into the raised one.
        failures: list[str] = []
        original = Display.error_as_warning

        def record(self, msg, exception, *args, **kwargs):
            failures.append(f'{msg} {exception}')
            return original(self, msg, exception, *args, **kwargs)

        monkeypatch.setattr(Display, 'error_as_warning', record)
        try:
            return InventoryManager(loader=DataLoader(), sources=[str(config)], cache=cache)
        except AnsibleError as e:
            raise AnsibleError('\n'.join([str(e), *failures])) from e
        finally:
            monkeypatch.setattr(Display, 'error_as_warning', original)

    return load


@pytest.fixture
def write_fleet(tmp_path):
    """Write a devices file and a config next to it; return the config path."""

    def write(devices=None, sites=None, options=None, name='fleet', devices_name='devices.yml', raw=None):
        devices_path = tmp_path / devices_name
        if raw is not None:
            devices_path.write_text(raw)
        else:
            doc: dict = {}
            if sites is not None:
                doc['sites'] = sites
            doc['devices'] = devices or []
            if devices_name.endswith('.json'):
                devices_path.write_text(json.dumps(doc, indent=1))
            else:
                devices_path.write_text(yaml.safe_dump(doc, sort_keys=False))
        config = {'plugin': PLUGIN, 'source_file': devices_name}
        config.update(options or {})
        if config.get('source_file') is None:
            del config['source_file']
        path = tmp_path / f'{name}.device_registry.yml'
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    return write


@pytest.fixture
def ansible_inventory(collections_dir):
    """Run the ansible-inventory CLI of this venv; return the CompletedProcess."""
    exe = str(Path(sys.executable).parent / 'ansible-inventory')

    def run(*args, env=None):
        return subprocess.run(
            [exe, *args], cwd=REPO, env=ansible_env(collections_dir, env), capture_output=True, text=True, timeout=120,
            check=False,
        )

    return run


# ----------------------------------------------------------------------------- registry API


class RegistryState:
    def __init__(self) -> None:
        self.devices: list = []
        self.sites: dict = {}
        self.mode = 'ok'  # ok | error500 | malformed | offsite_next | loop
        self.requests: list[dict] = []
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    server_version = 'edgeai-test-registry/1'

    def log_message(self, *args):  # keep test output quiet
        pass

    def _send(self, code: int, body: bytes, ctype: str = 'application/json') -> None:
        self.send_response(code)
        self.send_header('Content-Type', ctype)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        state: RegistryState = self.server.state
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        with state.lock:
            state.requests.append({'path': self.path, 'authorization': self.headers.get('Authorization')})
            mode = state.mode
        if self.headers.get('Authorization') != f'Bearer {TOKEN}':
            return self._send(401, b'{"error": "unauthorized"}')
        if parts.path != '/api/devices':
            return self._send(404, b'{"error": "not found"}')
        if mode == 'error500':
            return self._send(500, b'{"error": "registry database unavailable"}')
        if mode == 'malformed':
            return self._send(200, b'{"devices": [')
        size = int(query.get('page_size', ['100'])[0])
        page = int(query.get('page', ['1'])[0])
        items = state.devices[(page - 1) * size:page * size]
        more = page * size < len(state.devices)
        if mode == 'offsite_next':
            nxt = 'https://other.invalid/api/devices?page=2'
        elif mode == 'loop':
            nxt = f'devices?page_size={size}&page=1'
        else:
            nxt = f'devices?page_size={size}&page={page + 1}' if more else None
        body: dict = {'devices': items, 'next': nxt}
        if page == 1 and state.sites:
            body['sites'] = state.sites
        return self._send(200, json.dumps(body).encode())


class RegistryApi:
    def __init__(self, tmp: Path) -> None:
        ca = trustme.CA()
        cert = ca.issue_cert('127.0.0.1', 'localhost')
        self.ca_path = tmp / 'registry-ca.pem'
        ca.cert_pem.write_to_path(str(self.ca_path))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert.configure_cert(context)
        self.state = RegistryState()
        self.server = ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
        self.server.daemon_threads = True
        self.server.state = self.state
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f'https://127.0.0.1:{self.server.server_address[1]}/api'
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={'poll_interval': 0.1}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def registry_api(tmp_path):
    api = RegistryApi(tmp_path)
    try:
        yield api
    finally:
        api.close()
