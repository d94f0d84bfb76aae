# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# This file is PRIVATE to the edgeai.fleet collection. It is not a public API: it may
# change or go away in any release without notice.

"""The engine of edgeai.fleet.webhook_target: read-compare-write of a device registration."""

from __future__ import annotations

from urllib.parse import quote, urlsplit

from ansible_collections.edgeai.fleet.plugins.module_utils._errors import EdgeAIError, HTTPError
from ansible_collections.edgeai.fleet.plugins.module_utils._webhook import (
    WebhookClient,
    make_event,
)

REGISTRATION_FIELDS = (
    "site", "platform", "hardware", "model_name", "model_version", "server_endpoint",
    "webhook_url", "event_types", "labels",
)

ARGUMENT_SPEC = dict(
    api_url=dict(type="str", required=True),
    device_id=dict(type="str", required=True),
    state=dict(type="str", default="present", choices=["present", "absent"]),
    site=dict(type="str"),
    platform=dict(type="str"),
    hardware=dict(type="str"),
    model_name=dict(type="str"),
    model_version=dict(type="str"),
    server_endpoint=dict(type="str"),
    webhook_url=dict(type="str"),
    event_types=dict(type="list", elements="str"),
    labels=dict(type="dict"),
    api_token=dict(type="str", no_log=True),
    hmac_secret=dict(type="str", no_log=True),
    test_event=dict(type="bool", default=False),
    allow_insecure_http=dict(type="bool", default=False),
    validate_certs=dict(type="bool", default=True),
    ca_path=dict(type="path"),
    timeout=dict(type="float", default=10.0),
    retries=dict(type="int", default=3),
    retry_delay=dict(type="float", default=1.0),
)


def desired_registration(params):
    """The registration the task asks for, in the form the API stores (None fields left out)."""
    wanted = {}
    for name in REGISTRATION_FIELDS:
        value = params.get(name)
        if value is None:
            continue
        if name == "event_types":
            value = sorted(set(value))
        wanted[name] = value
    return wanted


def comparable(registration):
    """The fields of a stored registration that the task manages."""
    if not isinstance(registration, dict):
        return {}
    result = {}
    for name in REGISTRATION_FIELDS:
        value = registration.get(name)
        if value is None:
            continue
        if name == "event_types" and isinstance(value, list):
            value = sorted(set(value))
        result[name] = value
    return result


class WebhookTarget:
    def __init__(self, params, check_mode=False, client=None):
        self.params = params
        self.check_mode = check_mode
        self.client = client or WebhookClient(
            self.params["api_url"],
            token=self.params["api_token"],
            validate_certs=self.params["validate_certs"],
            ca_path=self.params["ca_path"],
            timeout=self.params["timeout"],
            retries=self.params["retries"],
            retry_delay=self.params["retry_delay"],
            allow_insecure_credentials=self.params["allow_insecure_http"],
        )
        self.path = "/v1/devices/" + quote(self.params["device_id"], safe="")

    # -- checks ---------------------------------------------------------------------
    def validate(self):
        for name in ("api_url", "webhook_url"):
            url = self.params.get(name)
            if url is None:
                continue
            scheme = urlsplit(url).scheme
            if scheme not in ("http", "https"):
                self.fail(f"{name} must be an http(s) URL, got {url!r}")
            if scheme == "http" and not self.params["allow_insecure_http"]:
                self.fail(f"{name} uses plain http; use https or set allow_insecure_http: true "
                          "(the API token and events would cross the network unencrypted)")
        if self.params["test_event"] and not self.params["hmac_secret"]:
            self.fail("test_event: true needs hmac_secret to sign the test event")
        if self.params["retries"] < 0:
            self.fail("retries must be 0 or more")

    def fail(self, msg, **extra):
        raise EdgeAIError(msg, **extra)

    def _call(self, method, path, **kwargs):
        try:
            return self.client.request(method, path, **kwargs)
        except HTTPError as exc:  # unreachable, or the token refused to plain http
            self.fail(exc.msg, attempts=self.client.attempts)

    def _unexpected(self, method, status, body):
        kind = "refused the request" if status is not None and 400 <= status < 500 else "failed"
        self.fail(f"{method} {self.path}: the event API {kind} with HTTP {status}",
                  status=status, response=body, attempts=self.client.attempts)

    # -- work -----------------------------------------------------------------------
    def current(self):
        status, body = self._call("GET", self.path)
        if status == 404:
            return None
        if status != 200 or not isinstance(body, dict):
            self._unexpected("GET", status, body)
        return body

    def run(self):
        self.validate()
        result = dict(changed=False, device_id=self.params["device_id"], state=self.params["state"])
        current = self.current()
        before = comparable(current)
        if self.params["state"] == "absent":
            result["registration"] = {}
            if current is not None:
                result["changed"] = True
                if not self.check_mode:
                    status, body = self._call("DELETE", self.path)
                    if status not in (200, 204, 404):
                        self._unexpected("DELETE", status, body)
            result["diff"] = dict(before=before, after={})
            return result

        wanted = desired_registration(self.params)
        registration = current
        if current is None or before != wanted:
            result["changed"] = True
            if self.check_mode:
                registration = dict(wanted, device_id=self.params["device_id"])
            else:
                status, body = self._call("PUT", self.path, payload=wanted)
                if status not in (200, 201) or not isinstance(body, dict):
                    self._unexpected("PUT", status, body)
                registration = body
        result["registration"] = registration
        result["diff"] = dict(before=before, after=wanted)

        if self.params["test_event"]:
            result["test_event"] = self.ping()
        return result

    def ping(self):
        """Send a signed test event and require a 2xx. Skipped in check mode."""
        if self.check_mode:
            return dict(sent=False, skipped_reason="check mode")
        event = make_event("webhook.test", self.params["device_id"],
                           {"message": "test event from edgeai.fleet.webhook_target"})
        target = self.params["webhook_url"] or "/v1/events"
        status, body = self._call("POST", target, payload=event,
                                  sign_secret=self.params["hmac_secret"].encode("utf-8"),
                                  idempotency_key=event["id"])
        if status is None or not 200 <= status < 300:
            kind = "refused" if status is not None and 400 <= status < 500 else "failed"
            self.fail(f"test event {kind}: the event API answered HTTP {status}",
                      status=status, response=body, attempts=self.client.attempts)
        return dict(sent=True, id=event["id"], status=status, response=body)


def run_module(module_cls):
    """Entry point used by plugins/modules/webhook_target.py."""
    module = module_cls(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    try:
        result = WebhookTarget(module.params, check_mode=module.check_mode).run()
    except EdgeAIError as exc:
        module.fail_json(msg=exc.msg, **exc.details)
    module.exit_json(**result)
