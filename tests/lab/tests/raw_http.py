"""A raw-socket HTTP/1.1 client for the hostile-client tests of the two servers that share
httpguard.py (test_relay_hostile.py: the relay's local API; test_receiver_hostile.py: the lab's
webhook receiver). Requests are written byte for byte, so malformed framing reaches the server
as is; an answer is read whatever the server does with the connection."""

from __future__ import annotations

import json
import socket


class Answer:
    def __init__(self, status: int | None, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)


def read_answer(sock: socket.socket, timeout: float = 5.0) -> Answer:
    """One HTTP response from sock; status None when the connection ended (or reset) without one."""
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return Answer(None, {}, data)
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        return Answer(int(lines[0].split()[1]), headers, rest[:length])
    except (ConnectionResetError, TimeoutError):
        return Answer(None, {}, data)


def exchange(port: int, raw: bytes, *, end: bool = False, timeout: float = 5.0) -> Answer:
    """Send raw bytes to 127.0.0.1:port (then, with end, close the sending side) and read one answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(raw)
            if end:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        return read_answer(sock, timeout)
