"""The event relay (images/event-relay/src) as a process of the checkout on a free loopback port.

Its config, secrets, queue and log live in one folder of the caller's; start() and stop() make it go
away and come back on the same port and queue. The relay integration tests
(tests/integration/test_events_relay.py) and the relay benchmark (benchmarks/relay) both use it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from webhook_receiver.testing import free_port, http_json, stop_process, wait_for_port, write_secret

from edgeai_lab.core import REPO

RELAY_SRC = REPO / "images" / "event-relay" / "src"


class RelayProcess:
    def __init__(self, workdir: Path, webhook_url: str, *, secret: str, token: str, local_token: str,
                 device_id: str = "lab-dev-01", **settings: Any) -> None:
        """settings: more of the relay's config keys (images/event-relay/README.md); its defaults otherwise,
        no status reports (status_interval_s 0)."""
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir, self.port, self.local_token = workdir, free_port(), local_token
        self.config = {
            "device_id": device_id, "webhook_url": webhook_url, "listen_host": "127.0.0.1", "listen_port": self.port,
            "queue_path": str(workdir / "queue" / "queue.db"), "status_interval_s": 0,
            **{f"{key}_file": str(write_secret(workdir / key, value))
               for key, value in (("secret", secret), ("token", token), ("local_token", local_token))},
            **settings}
        self.config_file = workdir / "relay.json"
        self.config_file.write_text(json.dumps(self.config))
        self.log = workdir / "relay.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RelayProcess:
        # the relay's own settings from this environment (EDGEAI_RELAY_*) would override the config file
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEAI_RELAY_")}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "event_relay", "--config", str(self.config_file)],
                                         env=dict(env, PYTHONPATH=str(RELAY_SRC)), stdout=log, stderr=log)
        wait_for_port(self.port, timeout=20, proc=self.proc)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop_process(self.proc, sig, grace=20)
        self.proc = None

    def post(self, event: dict[str, Any], timeout: float = 5.0) -> tuple[int, Any]:
        """An event to the local API, with the local token."""
        return http_json("POST", self.url + "/v1/events", event, timeout=timeout,
                         headers={"Authorization": f"Bearer {self.local_token}"})

    def get(self, path: str) -> tuple[int, Any]:
        return http_json("GET", self.url + path, headers={"Authorization": f"Bearer {self.local_token}"})

    def metrics(self) -> dict[str, float]:
        """/metrics: each sample's value by its name and labels (`name{label="x"}`)."""
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as response:
            text = response.read().decode()
        return {name: float(value) for name, value in
                (line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))}

    def __enter__(self) -> RelayProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
