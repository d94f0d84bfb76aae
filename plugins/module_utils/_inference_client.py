# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the edgeai.fleet collection: not a public API, may change without notice.
"""A small client for the KServe v2 / Open Inference Protocol (HTTP/JSON) with Triton's
model repository and statistics extensions. Triton and the project's LiteRT server both
speak it. Standard library and ansible.module_utils only: it runs on the device."""

from __future__ import annotations

import json
import time
from urllib.parse import quote

from ansible.module_utils.urls import open_url
from ansible_collections.edgeai.fleet.plugins.module_utils._errors import ServerError
from ansible_collections.edgeai.fleet.plugins.module_utils._http import Client, RetryPolicy, error_text

# Connection options shared by every module that talks to an inference server. Documented
# once in the doc fragment edgeai.fleet._inference_server; merged into argument specs with
# inference_server_argument_spec().
INFERENCE_SERVER_ARGS = dict(
    url=dict(type="str", default="http://127.0.0.1:8000"),
    timeout=dict(type="float", default=30.0),
    validate_certs=dict(type="bool", default=True),
    ca_path=dict(type="path"),
    token=dict(type="str", no_log=True),
    allow_insecure_credentials=dict(type="bool", default=False),
)


def inference_server_argument_spec(**extra):
    spec = dict((k, dict(v)) for k, v in INFERENCE_SERVER_ARGS.items())
    spec.update(extra)
    return spec


def _error_text(body):
    return error_text(body)


class InferenceClient:
    """One inference server reached over HTTP(S), on the one HTTP layer
    (plugins/module_utils/_http.py). The token goes over https, or plain http to the
    device's loopback (where the server listens by default), unless
    ``allow_insecure_credentials``. No retries by default: the callers poll (waiters,
    health probes) and a model load is not repeated behind their back."""

    def __init__(self, url="http://127.0.0.1:8000", timeout=30.0, validate_certs=True,
                 ca_path=None, token=None, opener=open_url, allow_insecure_credentials=False, retries=0):
        self.base = url.rstrip("/")
        self.timeout = timeout
        self.token = token
        self.http = Client(timeout=timeout, validate_certs=validate_certs, ca_path=ca_path,
                           retry=RetryPolicy(retries), allow_insecure_credentials=allow_insecure_credentials,
                           opener=opener, error=ServerError, what="the server", secrets=[token])

    @classmethod
    def from_params(cls, params):
        return cls(url=params["url"], timeout=params["timeout"],
                   validate_certs=params["validate_certs"], ca_path=params.get("ca_path"),
                   token=params.get("token"),
                   allow_insecure_credentials=bool(params.get("allow_insecure_credentials")))

    # -- transport -------------------------------------------------------------------
    def request(self, method, path, body=None, ok=(200,), timeout=None):
        """Send a request; return ``(status, parsed JSON or None)``.

        Statuses outside ``ok`` raise ServerError with the server's error text; a token
        that may not be sent raises CredentialError (not a ServerError: no probe takes it
        for a server that is down)."""
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        credentials = {"Authorization": f"Bearer {self.token}"} if self.token else None
        # transport failures raise ServerError (the client's error type), refusals CredentialError
        resp = self.http.request(method, self.base + path, data=data, headers=headers, credentials=credentials,
                                 timeout=timeout or self.timeout, what_credentials="the inference server token (token)")
        status, raw = resp.status, resp.read()
        if status not in ok:
            raise self.http.fail(f"{method} {path}: HTTP {status}: {_error_text(raw)}", status=status, body=raw,
                                 url=self.base + path)
        if not raw:
            return status, None
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode("utf-8", "replace")

    def _probe(self, path):
        try:
            status, dummy = self.request("GET", path, ok=(200, 400, 404, 503))
        except ServerError:
            return False
        return status == 200

    @staticmethod
    def _model_path(model, version=None):
        path = "/v2/models/{}".format(quote(model, safe=""))
        if version not in (None, ""):
            path += "/versions/{}".format(quote(str(version), safe=""))
        return path

    # -- health and metadata ---------------------------------------------------------
    def live(self):
        return self._probe("/v2/health/live")

    def ready(self):
        return self._probe("/v2/health/ready")

    def server_metadata(self):
        return self.request("GET", "/v2")[1]

    def model_ready(self, model, version=None):
        return self._probe(self._model_path(model, version) + "/ready")

    def model_metadata(self, model, version=None):
        return self.request("GET", self._model_path(model, version))[1]

    def model_config(self, model):
        """Triton's configuration extension; None where the server lacks it."""
        status, data = self.request("GET", self._model_path(model) + "/config",
                                    ok=(200, 400, 404, 501))
        return data if status == 200 else None

    def model_stats(self, model=None):
        """Triton's statistics extension; None where the server lacks it."""
        path = (self._model_path(model) if model else "/v2/models") + "/stats"
        try:
            status, data = self.request("GET", path, ok=(200, 400, 404, 405, 501))
        except ServerError as exc:
            if exc.status is not None:
                return None
            raise
        return data if status == 200 else None

    # -- repository extension --------------------------------------------------------
    def repository_index(self, ready_only=False):
        return self.request("POST", "/v2/repository/index", body={"ready": bool(ready_only)})[1] or []

    def model_versions(self, model):
        """Versions of ``model`` in the index as ``{version: state}``."""
        versions = {}
        for entry in self.repository_index():
            if entry.get("name") == model and entry.get("version") not in (None, ""):
                versions[str(entry["version"])] = entry.get("state") or ""
        return versions

    def load(self, model, timeout=None):
        """Ask the server to (re)load ``model`` from its repository. Blocks until the
        server answers, which Triton does when loading finished or failed."""
        path = "/v2/repository/models/{}/load".format(quote(model, safe=""))
        self.request("POST", path, body={}, timeout=timeout)

    def unload(self, model, timeout=None):
        path = "/v2/repository/models/{}/unload".format(quote(model, safe=""))
        self.request("POST", path, body={}, timeout=timeout)

    # -- inference -------------------------------------------------------------------
    def infer(self, model, inputs, outputs=None, version=None, timeout=None):
        """Run one inference; return ``(response, latency_ms)``."""
        body = {"inputs": inputs}
        if outputs:
            body["outputs"] = [{"name": name} for name in outputs]
        start = time.monotonic()
        dummy, data = self.request("POST", self._model_path(model, version) + "/infer",
                                   body=body, timeout=timeout)
        latency_ms = (time.monotonic() - start) * 1000.0
        if not isinstance(data, dict) or "outputs" not in data:
            raise ServerError(f"inference on {model} returned no outputs: {data!r}")
        return data, latency_ms
