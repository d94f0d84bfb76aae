"""The LiteRT server (images/litert-server/src) as a process of the checkout, on free loopback ports.

`ServerProcess` is what any local HTTP server process needs: its output in a log file, a session of its own
(workers it forks go with it), readiness by GET, the end of its log in every failure, and stop.
`litert_process()` starts our LiteRT server as one. The serving integration tests
(tests/integration/test_model_serving.py) and the LiteRT benchmark (benchmarks/litert, which also runs
MLServer as one) use them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from webhook_receiver.testing import free_port, http_json, stop_process

from edgeai_lab.core import REPO

LITERT_SRC = REPO / "images" / "litert-server" / "src"


class ServerProcess:
    def __init__(self, label: str, argv: list[str], log: Path, port: int, *, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.label, self.port, self.log = label, port, log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self, tail: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-tail:]

    def failed(self, why: str) -> RuntimeError:
        return RuntimeError(f"{self.label} {why}; log: {self.logs(1500)}")

    def ready(self, path: str = "/v2/health/ready") -> bool:
        """GET path answers 200; RuntimeError once the process has exited."""
        if self.proc.poll() is not None:
            raise self.failed(f"exited with {self.proc.returncode}")
        try:
            return http_json("GET", self.url + path, timeout=2)[0] == 200
        except (OSError, ValueError):
            return False

    def wait_ready(self, paths: tuple[str, ...] = ("/v2/health/ready",), timeout: float = 90) -> ServerProcess:
        deadline = time.monotonic() + timeout
        for path in paths:
            while not self.ready(path):
                if time.monotonic() > deadline:
                    raise self.failed(f"is not ready ({path}) after {timeout:.0f} s")
                time.sleep(0.1)
        return self

    def stop(self, grace: float = 15) -> None:
        stop_process(self.proc, grace=grace)


def litert_process(workdir: Path, repo: Path, *args: str, label: str = "litert-server") -> ServerProcess:
    """Our LiteRT server on repo, started (not yet ready): run in workdir, its log there, its own settings only
    (none from this environment's EDGEAI_LITERT_*), args after the ports and the repository."""
    port = free_port()
    argv = [sys.executable, "-m", "litert_server", "--host", "127.0.0.1", "--port", str(port), "--metrics-port",
            str(free_port()), "--model-repository", str(repo), *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEAI_LITERT_")}
    return ServerProcess(label, argv, workdir / f"{label}.log", port, env=dict(env, PYTHONPATH=str(LITERT_SRC)),
                         cwd=workdir)
