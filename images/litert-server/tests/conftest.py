"""Fixtures for the litert-server tests (helpers live in litert_testlib)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from litert_testlib import Server, make_repo, start_server, stop_server


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def factory(
        repo: Path | None = None, args: list[str] | None = None, env: dict[str, str] | None = None, token: str = ""
    ) -> Server:
        server = start_server(tmp_path, repo or make_repo(tmp_path), args, env, token)
        started.append(server)
        return server

    yield factory
    for server in started:
        stop_server(server)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for read-mostly protocol tests; float_model and uint8_model loaded."""
    tmp = tmp_path_factory.mktemp("litert")
    srv = start_server(tmp, make_repo(tmp), ["--load-model", "float_model", "--load-model", "uint8_model"])
    yield srv
    stop_server(srv)
