"""The LiteRT server (images/litert-server/src) as a process of the checkout, on free loopback ports.

`wait_ready()` waits for any KServe v2 server (a container's too) to answer. `ServerProcess` is what any local
HTTP server process needs: its output in a log file, a session of its own (workers it forks go with it),
readiness, the end of its log in every failure, and stop.
`litert_process()` starts our LiteRT server as one. The serving integration tests
(tests/integration/test_model_serving.py, whose Triton containers test_triton_image.py shares) and the LiteRT
benchmark (benchmarks/litert, which also runs
MLServer as one) use them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from webhook_receiver.testing import free_port, http_json, stop_process

from edgeai_lab.core import REPO

LITERT_SRC = REPO / "images" / "litert-server" / "src"
HEALTH = "/v2/health/ready"  # KServe v2: Triton, our LiteRT server, MLServer


def wait_ready(url: str, paths: tuple[str, ...] = (HEALTH,), timeout: float = 90.0, *,
               gone: Callable[[], str | None] = lambda: None, failed: Callable[[str], Exception] | None = None) -> None:
    """Until GET url + path answers 200, for each path in turn. failed(why) is raised (by default a RuntimeError
    naming url) once the time is up, or at once when gone() says why the server is gone."""
    deadline = time.monotonic() + timeout
    for path in paths:
        while not answers(url + path):
            why = gone() or (f"is not ready ({path}) after {timeout:.0f} s" if time.monotonic() > deadline else None)
            if why:
                raise failed(why) if failed else RuntimeError(f"{url} {why}")
            time.sleep(0.1)


def answers(url: str) -> bool:
    """GET url answers 200."""
    try:
        return http_json("GET", url, timeout=2)[0] == 200
    except (OSError, ValueError):
        return False


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

    def wait_ready(self, paths: tuple[str, ...] = (HEALTH,), timeout: float = 90) -> ServerProcess:
        wait_ready(self.url, paths, timeout, failed=self.failed,
                   gone=lambda: None if self.proc.poll() is None else f"exited with {self.proc.returncode}")
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
