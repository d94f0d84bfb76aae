"""Paths, constants and small helpers shared by the lab's modules."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

LAB_DIR = Path(__file__).resolve().parent.parent          # tests/lab
REPO = LAB_DIR.parent.parent                               # repository root
STATE_DIR = Path(os.environ.get("EDGEAI_LAB_STATE", REPO / ".lab"))
CACHE_DIR = STATE_DIR / "cache"                            # kept by `lab down`
PROFILES_DIR = LAB_DIR / "profiles"
VENV_PY = REPO / ".venv" / "bin" / "python"

LABEL = "edgeai.lab=1"
LABEL_KEY = "edgeai.lab"
BASE_IMAGE = "edgeai-lab/debian:bookworm"
DEVICE_REPO = "edgeai-lab/device"
CONTAINER_PREFIX = "edgeai-lab-"
NETWORK_PREFIX = "edgeai-lab-"

REGISTRY_HOST = "registry.edgeai.lab"
REGISTRY_PORT = 5443
APT_HOST = "apt.edgeai.lab"
APT_PORT = 8765
WEBHOOK_HOST = "webhook.edgeai.lab"
WEBHOOK_PORT = 8766
ARTIFACTS_HOST = "artifacts.edgeai.lab"
ARTIFACTS_PORT = 8767
SSH_PORT_BASE = 22101

# Every capability engine 20.10 knows minus SYS_RESOURCE (LAB.md: --privileged and
# --cap-add=ALL fail on this kernel).
CAPABILITIES = (
    "CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP "
    "LINUX_IMMUTABLE NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER "
    "SYS_MODULE SYS_RAWIO SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE "
    "SYS_TIME SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_OVERRIDE "
    "MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ"
).split()


class LabError(RuntimeError):
    """A lab step failed; the message says which and why."""


def log(msg: str) -> None:
    print(f"lab: {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], *, check: bool = True, capture: bool = True, input: str | bytes | None = None,
        env: dict[str, str] | None = None, cwd: Path | None = None,
        timeout: float | None = None) -> subprocess.CompletedProcess:
    full_env = None
    if env:
        full_env = dict(os.environ)
        full_env.update(env)
    text = not isinstance(input, bytes)
    proc = subprocess.run(cmd, input=input, capture_output=capture, text=text, env=full_env, cwd=cwd,
                          timeout=timeout, check=False)
    if check and proc.returncode != 0:
        err = (proc.stderr or "") if capture else ""
        out = (proc.stdout or "") if capture else ""
        raise LabError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{str(out)[-2000:]}{str(err)[-2000:]}")
    return proc


def docker(*args: str, check: bool = True, input: str | bytes | None = None, timeout: float | None = None,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return run(["docker", *args], check=check, input=input, timeout=timeout, env=env)


def sha256_text(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else p.encode())
        h.update(b"\0")
    return h.hexdigest()


def _source_files(path: Path) -> list[Path]:
    """Files under path that git treats as source (tracked or untracked, not ignored): build
    outputs and caches (wheels/, .pytest_cache ...) do not trigger rebuilds."""
    proc = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", "."],
                          cwd=path, capture_output=True, check=False)
    if proc.returncode == 0:
        files = {path / f.decode() for f in proc.stdout.split(b"\0") if f}
        return sorted(f for f in files if f.is_file() or f.is_symlink())
    return sorted(p for p in path.rglob("*") if p.is_file() or p.is_symlink())


def hash_tree(path: Path, exclude: tuple[str, ...] = ()) -> str:
    """Hash of source file names, modes and contents under path (stable across runs)."""
    h = hashlib.sha256()
    for f in _source_files(path):
        rel = f.relative_to(path).as_posix()
        if any(rel == e or rel.startswith(e + "/") for e in exclude) or "__pycache__" in rel:
            continue
        h.update(rel.encode() + b"\0")
        if f.is_symlink():
            h.update(b"L" + os.readlink(f).encode())
        else:
            h.update(b"X" if os.access(f, os.X_OK) else b"-")
            h.update(f.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.1, what: str | None = None) -> Any:
    """predicate()'s first true value, tried every `interval` seconds for `timeout` seconds; after that an
    AssertionError naming `what`, or None when there is no `what` (a benchmark notes the miss)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(interval)
    if what is None:
        return None
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def wait_tcp(host: str, port: int, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
            return True
        time.sleep(0.2)
    return False


# ---- state file ---------------------------------------------------------------------------

STATE_FILE = STATE_DIR / "state.json"


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created when missing) for the `with` block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def state_lock() -> contextlib.AbstractContextManager[None]:
    """Serialise lab commands (molecule may add devices while a test runs `lab up`)."""
    return file_lock(STATE_DIR / ".lock")


def load_state() -> dict[str, Any]:
    if STATE_FILE.exists():
        return json.loads(STATE_FILE.read_text())
    return {"devices": {}}


def save_state(state: dict[str, Any]) -> None:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = STATE_FILE.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    tmp.replace(STATE_FILE)


def write_private(path: Path, data: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(data)
    os.chmod(path, 0o600)
