# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Attacks on the credentials of the device-side clients, against real servers on loopback:
credentials over plain http to another machine (played by a made-up host name that the test's
opener sends to loopback, as an /etc/hosts entry would), a registry that names a token realm on
another host or over plain http, redirects from https to http or to another host, URLs with
user:pass@ or presigned signatures in results, messages and the device's log, and secret role
variables without no_log.

Only names that exist before and after the hardening are imported, so that every test here
shows its attack against the old code as a failed assertion, not an import error."""

from __future__ import annotations

import base64
import glob
import json
import os
import re
from pathlib import Path

import pytest
import trustme
import yaml
from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.testing import patch_module_args
from ansible_collections.edgeai.fleet.plugins.module_utils import _events, _inference_model, _webhook, _webhook_target
from ansible_collections.edgeai.fleet.plugins.module_utils._artifact import ARGUMENT_SPEC, ModelArtifact
from ansible_collections.edgeai.fleet.plugins.module_utils._errors import EdgeAIError
from ansible_collections.edgeai.fleet.plugins.module_utils._events import EventPoster
from ansible_collections.edgeai.fleet.plugins.module_utils._inference_client import InferenceClient
from ansible_collections.edgeai.fleet.plugins.module_utils._webhook import WebhookClient
from ansible_collections.edgeai.fleet.plugins.modules import model_artifact, webhook_target
from artifact_helpers import params as artifact_params
from artifact_helpers import plenty, sha, tar_bytes
from loopback_http import LoopbackNames, Servers, carried, header_values

ROOT = Path(__file__).resolve().parents[4]
TOKEN = "tok-7f3a9c51e2d4"
PASSWORD = "pw-S3cr3t-91b7"
KEY = "key-55aa0c1d9e"
SIG = "3b9f0c2d8e7a61f45b0c9d8e7f6a5b4c"
REGISTRY_TOKEN = "reg-token-0d9c8b7a"


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


V1 = tar_bytes({"scale/config.pbtxt": b'name: "scale"\nbackend: "python"\n', "scale/1/model.py": b"K = 1\n"})


def params(tmp_path, **kw):
    """model_artifact's parameters, without retries (every attack here fails at once)."""
    return artifact_params(tmp_path, **{"retries": 0, **kw})


@pytest.fixture
def servers(tmp_path):
    group = Servers(trustme.CA(), tmp_path)
    yield group
    group.close()


# -- model_artifact: url credentials -------------------------------------------------------
@pytest.mark.parametrize("kind", ["url_token", "basic", "headers", "userinfo"])
def test_artifact_credentials_are_not_sent_over_plain_http_to_another_machine(tmp_path, servers, kind):
    server = servers.start(routes={"/m.tgz": (200, {}, V1)})
    opener = LoopbackNames({"store.example.test": "127.0.0.1"})
    url = f"http://store.example.test:{server.port}/m.tgz"
    creds = {"url_token": dict(url_token=TOKEN),
             "basic": dict(url_username="robot", url_password=PASSWORD),
             "headers": dict(headers={"X-Api-Key": KEY}),
             "userinfo": {}}[kind]
    if kind == "userinfo":
        url = f"http://robot:{PASSWORD}@store.example.test:{server.port}/m.tgz"
    p = params(tmp_path, url=url, sha256=sha(V1), **creds)
    for check_mode in (True, False):  # check mode tells the truth too
        with pytest.raises(EdgeAIError, match="allow_insecure_credentials") as caught:
            ModelArtifact(dict(p), check_mode=check_mode, opener=opener, statvfs_free=plenty).run()
        for secret in (TOKEN, PASSWORD, KEY):
            assert secret not in str(caught.value)
    assert server.log == []
    assert not (tmp_path / "artifacts" / "scale" / "1").exists()
    # the explicit option lets them go
    result = ModelArtifact(dict(p, allow_insecure_credentials=True), opener=opener, statvfs_free=plenty).run()
    assert result["changed"] is True
    assert carried(server, "Bearer " + TOKEN, basic("robot", PASSWORD), KEY)


@pytest.mark.parametrize("target", ["http-other-host", "https-other-host", "http-same-host"])
def test_artifact_redirect_elsewhere_carries_no_credentials(tmp_path, servers, target):
    if target == "http-other-host":
        other = servers.start(host="127.0.0.2", routes={"/m.tgz": (200, {}, V1)})
        location = other.url + "/m.tgz"
    elif target == "https-other-host":
        other = servers.start(tls=True, routes={"/m.tgz": (200, {}, V1)})
        location = f"https://localhost:{other.port}/m.tgz"  # another host name, same machine
    else:
        other = servers.start(routes={"/m.tgz": (200, {}, V1)})
        location = other.url + "/m.tgz"  # http on the same address, another port and scheme
    store = servers.start(tls=True, routes={"/m.tgz": (302, {"Location": location}, b"")})
    p = params(tmp_path, url=store.url + "/m.tgz", sha256=sha(V1), url_token=TOKEN, headers={"X-Api-Key": KEY},
               ca_path=servers.ca_path)
    result = ModelArtifact(p, statvfs_free=plenty).run()
    assert result["changed"] is True  # the download itself works
    assert header_values(store, "Authorization") == ["Bearer " + TOKEN]
    assert other.log and not carried(other, TOKEN, KEY)


# -- model_artifact: OCI registry -----------------------------------------------------------
def publish():
    """An image with the model under /models/scale: {path: (body, media type)}."""
    layer = tar_bytes({"models/scale/config.pbtxt": b'name: "scale"\n', "models/scale/1/model.py": b"K = 1\n"})
    ldigest = "sha256:" + sha(layer)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": "sha256:" + "0" * 64, "size": 2},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                       "digest": ldigest, "size": len(layer)}]}).encode()
    media = "application/vnd.oci.image.manifest.v1+json"
    return {"/v2/edgeai/m/manifests/1": (manifest, media), f"/v2/edgeai/m/blobs/{ldigest}": (layer, "x")}


def bearer_registry(realm):
    image = publish()

    def handle(req):
        if req.headers.get("Authorization") != "Bearer " + REGISTRY_TOKEN:
            challenge = f'Bearer realm="{realm}",service="registry",scope="repository:edgeai/m:pull"'
            return 401, {"WWW-Authenticate": challenge}, b""
        body, media = image.get(req.path.split("?")[0], (None, None))
        return (200, {"Content-Type": media}, body) if body is not None else (404, {}, b"")

    return {"*": handle}


def basic_registry():
    image = publish()

    def handle(req):
        if req.headers.get("Authorization") != basic("robot", PASSWORD):
            return 401, {"WWW-Authenticate": 'Basic realm="registry"'}, b""
        body, media = image.get(req.path.split("?")[0], (None, None))
        return (200, {"Content-Type": media}, body) if body is not None else (404, {}, b"")

    return {"*": handle}


def token_server():
    def token(req):
        if req.headers.get("Authorization") != basic("robot", PASSWORD):
            return 401, {}, b""
        return 200, {"Content-Type": "application/json"}, json.dumps({"token": REGISTRY_TOKEN}).encode()

    return {"/token": token}


def test_bearer_realm_on_another_host_gets_no_credentials(tmp_path, servers):
    tokens = servers.start(tls=True, routes=token_server())
    registry = servers.start(tls=True, routes=bearer_registry(f"https://localhost:{tokens.port}/token"))
    p = params(tmp_path, image=f"127.0.0.1:{registry.port}/edgeai/m:1", registry_username="robot",
               registry_password=PASSWORD, ca_path=servers.ca_path)
    with pytest.raises(EdgeAIError, match="registry_auth_hosts") as caught:
        ModelArtifact(dict(p), statvfs_free=plenty).run()
    assert PASSWORD not in str(caught.value)
    assert tokens.log == []  # not even asked
    assert not (tmp_path / "artifacts" / "scale" / "1").exists()
    # a host the user names may issue the tokens
    result = ModelArtifact(dict(p, registry_auth_hosts=["localhost"]), statvfs_free=plenty).run()
    assert result["changed"] is True
    assert header_values(tokens, "Authorization") == [basic("robot", PASSWORD)]


def test_bearer_realm_over_plain_http_gets_no_credentials(tmp_path, servers):
    opener = LoopbackNames({"registry.example.test": "127.0.0.1"})
    tokens = servers.start(routes=token_server())
    registry = servers.start(tls=True, routes=bearer_registry(f"http://registry.example.test:{tokens.port}/token"))
    p = params(tmp_path, image=f"registry.example.test:{registry.port}/edgeai/m:1", registry_username="robot",
               registry_password=PASSWORD, ca_path=servers.ca_path)
    with pytest.raises(EdgeAIError, match="plain http"):
        ModelArtifact(dict(p), opener=opener, statvfs_free=plenty).run()
    assert tokens.log == []
    assert not carried(registry, basic("robot", PASSWORD))


def test_registry_credentials_are_not_sent_to_a_plain_http_registry(tmp_path, servers):
    opener = LoopbackNames({"registry.example.test": "127.0.0.1"})
    registry = servers.start(routes=basic_registry())
    p = params(tmp_path, image=f"registry.example.test:{registry.port}/edgeai/m:1", registry_username="robot",
               registry_password=PASSWORD)
    with pytest.raises(EdgeAIError, match="allow_insecure_credentials"):
        ModelArtifact(dict(p), opener=opener, statvfs_free=plenty, registry_scheme="http").run()
    assert not carried(registry, basic("robot", PASSWORD))


# -- the inference server, the event API, the relay ----------------------------------------
def test_inference_token_is_not_sent_over_plain_http_to_another_machine(servers):
    server = servers.start(routes={"*": (200, {"Content-Type": "application/json"}, b'{"name": "fake"}')})
    opener = LoopbackNames({"inference.example.test": "127.0.0.1"})
    remote = InferenceClient(url=f"http://inference.example.test:{server.port}", token=TOKEN, opener=opener)
    with pytest.raises(EdgeAIError, match="allow_insecure_credentials"):
        remote.server_metadata()
    with pytest.raises(EdgeAIError):  # a health probe does not pass the refusal off as "not live"
        remote.live()
    assert server.log == []
    # the device's own loopback (the default url) gets it
    assert InferenceClient(url=server.url, token=TOKEN).server_metadata() == {"name": "fake"}
    assert header_values(server, "Authorization") == ["Bearer " + TOKEN]


def test_event_api_token_is_not_sent_over_plain_http_to_another_machine(servers, monkeypatch):
    server = servers.start(routes={"*": (200, {"Content-Type": "application/json"}, b"{}")})
    monkeypatch.setattr(_webhook, "open_url", LoopbackNames({"events.example.test": "127.0.0.1"}))
    client = WebhookClient(f"http://events.example.test:{server.port}", token=TOKEN, retries=0)
    with pytest.raises(EdgeAIError, match="allow_insecure_http"):
        client.request("GET", "/v1/devices/d1")
    assert server.log == []


def test_test_event_to_another_webhook_host_does_not_carry_the_api_token(servers, capsys):
    api = servers.start(routes={"/v1/devices/d1": lambda req: (404, {}, b"{}") if req.method == "GET" else
                                (200, {"Content-Type": "application/json"}, req.body or b"{}")})
    hook = servers.start(host="127.0.0.2", routes={"/hook": (202, {"Content-Type": "application/json"}, b"{}")})
    args = {"api_url": api.url, "allow_insecure_http": True, "api_token": TOKEN, "device_id": "d1",
            "webhook_url": hook.url + "/hook", "hmac_secret": PASSWORD, "test_event": True, "retries": 0}
    with patch_module_args(args), pytest.raises(SystemExit) as exc:
        webhook_target.main()
    out = capsys.readouterr().out
    assert exc.value.code == 0, out
    assert header_values(api, "Authorization") == ["Bearer " + TOKEN] * 2
    assert len(hook.log) == 1 and header_values(hook, "X-Edgeai-Signature")  # the event went, signed
    assert not carried(hook, TOKEN)


def test_relay_token_is_not_sent_over_plain_http_to_another_machine(tmp_path, servers):
    server = servers.start(routes={"/v1/events": (202, {}, b"")})
    token_file = tmp_path / "relay-token"
    token_file.write_text(TOKEN + "\n")
    options = {"url": f"http://relay.example.test:{server.port}", "token_file": str(token_file),
               "id_prefix": "run1.d1", "run_id": "run1", "source": "ansible", "timeout": 2}
    poster = EventPoster(options, "scale", 1, opener=LoopbackNames({"relay.example.test": "127.0.0.1"}))
    assert poster.post("deploy_failed") is False
    assert poster.undelivered == ["deploy_failed"] and server.log == []
    local = EventPoster(dict(options, url=server.url), "scale", 1)
    assert local.post("deploy_failed") is True
    assert header_values(server, "Authorization") == ["Bearer " + TOKEN]


# -- URLs in results, messages and the device's log -----------------------------------------
def run_model_artifact(capsys, monkeypatch, **args):
    logged = []  # what the module writes to the device's journal or syslog
    monkeypatch.setattr(AnsibleModule, "log", lambda self, msg, log_args=None: logged.append(msg))
    with patch_module_args(args), pytest.raises(SystemExit) as exc:
        model_artifact.main()
    raw = capsys.readouterr().out
    return exc.value.code, json.loads(raw), raw + "\n".join(logged)


def test_a_presigned_url_is_redacted_in_the_result_the_invocation_and_the_log(
        tmp_path, servers, capsys, monkeypatch):
    server = servers.start(routes={"/m.tgz": (200, {}, V1)})
    url = f"{server.url}/m.tgz?X-Amz-Credential=AKIAEXAMPLE0001%2F20240101&X-Amz-Expires=900&X-Amz-Signature={SIG}"
    rc, out, everything = run_model_artifact(capsys, monkeypatch, name="scale", version=1, sha256=sha(V1),
                                             dest=str(tmp_path / "a"), url=url)
    assert rc == 0 and out["changed"] is True, out
    assert SIG not in everything and "AKIAEXAMPLE0001" not in everything
    assert out["url"] == f"{server.url}/m.tgz?X-Amz-Credential=REDACTED&X-Amz-Expires=900&X-Amz-Signature=REDACTED"


def test_a_url_with_user_and_password_is_redacted_in_failures(tmp_path, servers, capsys, monkeypatch):
    server = servers.start(routes={"/m.tgz": (200, {}, V1)})
    url = f"http://robot:{PASSWORD}@127.0.0.1:{server.port}/m.tgz?sig={SIG}"
    rc, out, everything = run_model_artifact(capsys, monkeypatch, name="scale", version=1, sha256="0" * 64,
                                             dest=str(tmp_path / "a"), url=url)
    assert rc == 1 and "sha256 mismatch" in out["msg"]
    assert PASSWORD not in everything and SIG not in everything
    assert out["url"] == f"http://REDACTED@127.0.0.1:{server.port}/m.tgz?sig=REDACTED"


def test_a_url_with_nothing_secret_is_shown_as_given(tmp_path, servers, capsys, monkeypatch):
    server = servers.start(routes={"/m.tgz": (200, {}, V1)})
    url = f"{server.url}/m.tgz?version=1"
    rc, out, dummy = run_model_artifact(capsys, monkeypatch, name="scale", version=1, sha256=sha(V1),
                                        dest=str(tmp_path / "a"), url=url)
    assert rc == 0 and out["url"] == url
    assert out["invocation"]["module_args"]["url"] == url


# -- no_log on every secret option ---------------------------------------------------------
SECRET_NAME = re.compile(r"password|token|secret|key", re.I)
# Names that match but hold no secret, each with the reason.
NOT_SECRET = {
    "coral_apt_key": "the ASCII-armored public signing key of Coral's apt repository",
    "jetpack_apt_key": "the ASCII-armored public signing key of NVIDIA's apt repository",
    "apt_source_key": "the ASCII-armored public signing key of an apt repository (jetpack's or coral's)",
}
# ...and names that say where a secret is or who may read it, not what it is.
REFERENCE = re.compile(r"_(file|path|url|dir|group|owner|mode)$")


def secret_options(options, prefix=""):
    for name, spec in (options or {}).items():
        spec = spec or {}
        yield prefix + name, name, spec
        yield from secret_options(spec.get("options"), prefix + name + ".")


def test_every_secret_role_variable_is_no_log():
    missing, seen = [], set()
    for path in sorted(glob.glob(str(ROOT / "roles" / "*" / "meta" / "argument_specs.yml"))):
        with open(path, encoding="utf-8") as handle:
            specs = yaml.safe_load(handle)["argument_specs"]
        for entry, spec in specs.items():
            for full, name, option in secret_options(spec.get("options")):
                seen.add(name)
                if not SECRET_NAME.search(name) or name in NOT_SECRET or REFERENCE.search(name):
                    continue
                if option.get("no_log") is not True:
                    missing.append(f"{os.path.relpath(path, ROOT)} {entry}: {full}")
    assert missing == []
    assert set(NOT_SECRET) <= seen  # the exceptions still name real variables


def test_every_secret_module_option_is_no_log_and_url_too():
    missing = []
    for module, spec in (("model_artifact", ARGUMENT_SPEC), ("inference_model", _inference_model.ARGUMENT_SPEC),
                         ("webhook_target", _webhook_target.ARGUMENT_SPEC),
                         ("events", {"events": _events.EVENTS_ARGS})):
        for full, name, option in secret_options(spec):
            if SECRET_NAME.search(name) and not REFERENCE.search(name) and option.get("no_log") is not True:
                missing.append(f"{module}: {full}")
    assert missing == []
    # a presigned URL or one with user:pass@ is a credential
    assert ARGUMENT_SPEC["url"].get("no_log") is True
