# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the edgeai.fleet collection: not a public API, may change without notice.
"""Deployment events handed to the device's event relay (images/event-relay), which signs
them, queues them on disk and delivers them in order. The modules that change what a device
serves post their own events, so a deployment costs no extra round trip for them.

A relay that does not take an event is reported in the result (``events_undelivered``),
never a reason to fail the deployment: the model change itself already happened."""

from __future__ import annotations

import json

from ansible.module_utils.urls import open_url
from ansible_collections.edgeai.fleet.plugins.module_utils._errors import HTTPError
from ansible_collections.edgeai.fleet.plugins.module_utils._http import NO_RETRY, Client

# The ``events`` option of the modules that post them (documented in the doc fragment
# edgeai.fleet._events).
EVENTS_ARGS = dict(
    type="dict",
    options=dict(
        url=dict(type="str", default="http://127.0.0.1:8780"),
        token_file=dict(type="path"),
        id_prefix=dict(type="str", required=True),
        run_id=dict(type="str", required=True),
        source=dict(type="str", default="ansible"),
        timeout=dict(type="float", default=10.0),
    ),
)


class EventPoster:
    """Posts events of one deployment; remembers the types the relay did not take."""

    def __init__(self, options, model, version, opener=open_url):
        self.options = options or None
        self.model = model
        self.version = version
        self.undelivered = []
        self.delivered = []
        # why events were not taken, for the result (the relay's answer, an unreadable token)
        self.errors = []
        self._open = opener

    def _token(self):
        path = (self.options or {}).get("token_file")
        if not path:
            return None
        try:
            with open(path, encoding="utf-8") as handle:
                token = handle.read().strip()
        except OSError as exc:
            self._error(f"cannot read the relay token {path}: {exc.strerror or exc}")
            return None
        if not token:
            self._error(f"the relay token file {path} is empty")
        return token or None

    def _error(self, text):
        if text not in self.errors:
            self.errors.append(text)

    def post(self, event_type, previous_version=None, reason=None, version=None):
        if not self.options:
            return None
        o = self.options
        event = {
            "type": event_type,
            "source": o.get("source") or "ansible",
            "id": "{}.{}".format(o["id_prefix"], event_type),
            "data": {"model": self.model, "version": self.version if version is None else version,
                     "previous_version": previous_version, "run_id": o["run_id"], "reason": reason},
        }
        token = self._token()
        # The relay listens on the device's loopback: its token never goes over plain http
        # to another machine (such an event is counted as undelivered, nothing is sent).
        client = Client(timeout=o.get("timeout") or 10.0, retry=NO_RETRY, opener=self._open,
                        what="the event relay", secrets=[token])
        try:
            resp = client.request("POST", o["url"].rstrip("/") + "/v1/events", data=json.dumps(event).encode("utf-8"),
                                  headers={"Content-Type": "application/json"},
                                  credentials={"Authorization": "Bearer " + token} if token else None,
                                  what_credentials="the relay token (events.token_file)")
            ok = resp.status in (200, 201, 202)
            if not ok:
                self._error(f"the relay answered HTTP {resp.status}")
        except (HTTPError, OSError, ValueError) as exc:
            ok = False
            self._error(f"the relay did not take the event: {getattr(exc, 'msg', None) or exc}")
        (self.delivered if ok else self.undelivered).append(event_type)
        return ok
