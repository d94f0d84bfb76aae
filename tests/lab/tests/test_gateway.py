"""The lab gateway's link shaping, on loopback only: a real gateway process relays to a local
server; the tests shape, cut and count its link and check what a client sees.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from edgeai_lab import artifacts, cli
from edgeai_lab.core import LabError
from edgeai_lab.loopback import free_port

LAB = Path(__file__).resolve().parents[1]

PAYLOAD = bytes(range(256)) * 1200  # 300 kB


class Upstream:
    """Sends PAYLOAD to every client and records the address each one came from."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.peers: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, addr = self.sock.accept()
            except OSError:
                return
            self.peers.append(addr[0])
            threading.Thread(target=self._send, args=(conn,), daemon=True).start()

    @staticmethod
    def _send(conn: socket.socket) -> None:
        try:
            conn.sendall(PAYLOAD)
        except OSError:
            pass
        finally:
            conn.close()


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[dict]:
    upstream = Upstream()
    listen_ip, port = "127.0.7.1", free_port()
    cfg = {"apt_dir": str(tmp_path), "apt_port": free_port(), "apt_listen": [],
           "relays": [{"listen": [listen_ip, port], "target": ["127.0.0.1", upstream.port], "service": "registry"}],
           "links_file": str(tmp_path / "links.json"), "stats_file": str(tmp_path / "stats.json")}
    (tmp_path / "gateway.json").write_text(json.dumps(cfg))
    proc = subprocess.Popen([sys.executable, "-m", "edgeai_lab.gateway", str(tmp_path / "gateway.json")],
                            cwd=LAB, stderr=subprocess.DEVNULL)
    # the gateway writes its first counters once its listeners run
    deadline = time.monotonic() + 10
    while not (tmp_path / "stats.json").exists() and time.monotonic() < deadline:
        time.sleep(0.1)

    def fresh_stats(newer_than: float) -> dict:
        while True:
            data = json.loads((tmp_path / "stats.json").read_text())
            if data["time"] > newer_than:
                return data
            time.sleep(0.1)

    def shape(rule: dict) -> None:
        since = time.time()
        (tmp_path / "links.json").write_text(json.dumps({listen_ip: rule}))
        fresh_stats(since + 0.6)  # applied: the gateway re-reads rules before it writes counters

    def stats() -> dict:
        return fresh_stats(time.time())["sites"].get(listen_ip, {})

    yield {"addr": (listen_ip, port), "shape": shape, "stats": stats, "upstream": upstream}
    proc.terminate()
    proc.wait(10)
    upstream.sock.close()


def _fetch(addr: tuple[str, int], timeout: float = 20) -> bytes:
    data = b""
    with socket.create_connection(addr, timeout=timeout) as s:
        while chunk := s.recv(65536):
            data += chunk
    return data


def test_relays_from_the_site_source_address_and_counts_bytes(gateway: dict) -> None:
    assert _fetch(gateway["addr"]) == PAYLOAD
    # 127.0.7.1 is the site's listen address: its upstream connections leave from the same one
    assert gateway["upstream"].peers == ["127.0.7.1"]
    counted = gateway["stats"]()["registry"]
    assert counted["down"] == len(PAYLOAD)
    assert counted["connections"] == 1


def test_rate_limit_slows_the_link(gateway: dict) -> None:
    gateway["shape"]({"rate": 100_000})
    t0 = time.monotonic()
    assert _fetch(gateway["addr"]) == PAYLOAD
    # 300 kB at 100 kB/s, with at most one 16 kB burst: never under 2.5 s
    assert time.monotonic() - t0 >= 2.5


def test_delay_is_added_once_per_chunk_not_per_byte(gateway: dict) -> None:
    gateway["shape"]({"delay_ms": 300})
    t0 = time.monotonic()
    assert _fetch(gateway["addr"]) == PAYLOAD
    elapsed = time.monotonic() - t0
    assert elapsed >= 0.3
    # chunks queue while they wait: 19 chunks of 16 kB do not take 19 delays
    assert elapsed < 19 * 0.3


def test_cut_closes_open_connections_and_refuses_new_ones(gateway: dict) -> None:
    gateway["shape"]({"rate": 20_000})
    got = bytearray()
    done = threading.Event()

    def slow_reader() -> None:
        with socket.create_connection(gateway["addr"], timeout=30) as s:
            try:
                while chunk := s.recv(4096):
                    got.extend(chunk)
            except OSError:
                pass
        done.set()

    threading.Thread(target=slow_reader, daemon=True).start()
    time.sleep(1.5)
    gateway["shape"]({"rate": 20_000, "cut": True})
    assert done.wait(10), "the cut did not close the open connection"
    assert 0 < len(got) < len(PAYLOAD)
    assert _fetch(gateway["addr"], timeout=5) == b""
    gateway["shape"]({})
    assert _fetch(gateway["addr"]) == PAYLOAD


@pytest.mark.parametrize(("text", "rate"), [("2mbit", 250_000), ("500kbit", 62_500), ("250kB", 250_000),
                                            ("1MiB", 1_048_576), ("1000", 1000)])
def test_parse_rate(text: str, rate: int) -> None:
    assert cli.parse_rate(text) == rate


def test_parse_rate_names_the_bad_input() -> None:
    with pytest.raises(LabError, match="cannot read rate '2 furlongs'"):
        cli.parse_rate("2 furlongs")


def test_artifact_ranges() -> None:
    assert artifacts.RANGE.match("bytes=100-").groups() == ("100", "")
    assert artifacts.RANGE.match("bytes=-5").groups() == ("", "5")
    assert artifacts.RANGE.match("bytes=1-2,4-5") is None
