"""Host-side lab services: the gateway (apt repo + relays), the registry, the webhook receiver."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from edgeai_lab import pki
from edgeai_lab.apt import REPO_DIR
from edgeai_lab.core import (
    APT_PORT,
    ARTIFACTS_HOST,
    ARTIFACTS_PORT,
    LAB_DIR,
    REGISTRY_HOST,
    REGISTRY_PORT,
    STATE_DIR,
    VENV_PY,
    WEBHOOK_HOST,
    WEBHOOK_PORT,
    LabError,
    docker,
    file_lock,
    hash_tree,
    log,
    run,
    sha256_text,
    wait_tcp,
    write_private,
)

RUN = STATE_DIR / "run"
LOGS = STATE_DIR / "logs"
REGISTRY_DIR = STATE_DIR / "registry"
CREDENTIALS = REGISTRY_DIR / "credentials.json"
CREDENTIALS_VARS = REGISTRY_DIR / "credentials.yml"
DOCKER_CONFIG = STATE_DIR / "docker"
WEBHOOK_DIR = STATE_DIR / "webhook"
ARTIFACTS_DIR = STATE_DIR / "artifacts"
ARTIFACTS_CREDENTIALS = ARTIFACTS_DIR / "credentials.json"
ARTIFACTS_CREDENTIALS_VARS = ARTIFACTS_DIR / "credentials.yml"
LINKS_FILE = RUN / "links.json"
STATS_FILE = RUN / "gateway-stats.json"
REGISTRY_USER = "edgeai-lab"


def bridge_gateway() -> str:
    """The IP the devices' `host-gateway` resolves to (the default bridge's gateway)."""
    out = docker("network", "inspect", "bridge", "--format", "{{range .IPAM.Config}}{{.Gateway}}{{end}}").stdout.strip()
    if not out:
        # engine 20.10 leaves Gateway empty for the default bridge: read the bridge interface
        iface = docker("network", "inspect", "bridge", "--format",
                       '{{index .Options "com.docker.network.bridge.name"}}').stdout.strip() or "docker0"
        addr = run(["ip", "-4", "-o", "addr", "show", "dev", iface], check=False).stdout.split()
        if "inet" in addr:
            out = addr[addr.index("inet") + 1].split("/")[0]
    if not out:
        raise LabError("cannot find the gateway of Docker's default bridge")
    return out


# ---- processes ---------------------------------------------------------------------------

def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def proc_running(name: str) -> int | None:
    pidfile = RUN / f"{name}.pid"
    if not pidfile.exists():
        return None
    pid = int(pidfile.read_text().strip())
    return pid if _pid_alive(pid) else None


def start_process(name: str, argv: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> int:
    """Start a background process once; restart it when its command line changed."""
    RUN.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    fingerprint = json.dumps({"argv": argv, "env": env or {}}, sort_keys=True)
    cmdfile = RUN / f"{name}.cmd"
    pid = proc_running(name)
    if pid and cmdfile.exists() and cmdfile.read_text() == fingerprint:
        return pid
    if pid:
        stop_process(name)
    full_env = dict(os.environ)
    full_env.update(env or {})
    with open(LOGS / f"{name}.log", "ab") as fh:
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=full_env, cwd=cwd, start_new_session=True)
    (RUN / f"{name}.pid").write_text(f"{proc.pid}\n")
    cmdfile.write_text(fingerprint)
    time.sleep(0.3)
    if proc.poll() is not None:
        said = (LOGS / f"{name}.log").read_text(errors="replace").strip().splitlines()[-1:] or [""]
        hint = " (another lab running, from another checkout? `tests/lab/lab down` there)" \
            if "address already in use" in said[0] else ""
        raise LabError(f"{name} exited at once ({proc.returncode}): {said[0][-300:]}{hint}; "
                       f"see .lab/logs/{name}.log")
    return proc.pid


def stop_process(name: str) -> bool:
    pid = proc_running(name)
    if pid:
        os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            if not _pid_alive(pid):
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
    for suffix in ("pid", "cmd"):
        (RUN / f"{name}.{suffix}").unlink(missing_ok=True)
    return pid is not None


# ---- gateway ------------------------------------------------------------------------------

def ensure_gateway(site_gws: list[str], relays: list[dict[str, Any]]) -> None:
    cfg = {"apt_dir": str(REPO_DIR), "apt_port": APT_PORT, "apt_listen": ["127.0.0.1", *site_gws], "relays": relays,
           "links_file": str(LINKS_FILE), "stats_file": str(STATS_FILE)}
    cfg_file = RUN / "gateway.json"
    RUN.mkdir(parents=True, exist_ok=True)
    cfg_file.write_text(json.dumps(cfg, indent=2))
    # the running gateway picks up new listen addresses from the file (no restart)
    start_process("gateway", [str(VENV_PY if VENV_PY.exists() else "python3"), "-m", "edgeai_lab.gateway",
                              str(cfg_file)], env={"PYTHONPATH": str(LAB_DIR),
                                                   "EDGEAI_LAB_CODE": sha256_text(
                                                       (LAB_DIR / "edgeai_lab" / "gateway.py").read_bytes())[:16]})
    for addr in cfg["apt_listen"]:
        if not wait_tcp(addr, APT_PORT, 15):
            raise LabError(f"the lab gateway does not listen on {addr}:{APT_PORT}; see .lab/logs/gateway.log")


# ---- registry -----------------------------------------------------------------------------

def registry_credentials() -> dict[str, str]:
    if CREDENTIALS.exists():
        return json.loads(CREDENTIALS.read_text())
    password = pki.ensure_secret(REGISTRY_DIR / ".password")
    creds = {"registry": f"{REGISTRY_HOST}:{REGISTRY_PORT}", "username": REGISTRY_USER, "password": password}
    write_private(CREDENTIALS, json.dumps(creds, indent=2) + "\n")
    write_private(CREDENTIALS_VARS, yaml.safe_dump({
        "edge_lab_registry": creds["registry"],
        "edge_lab_registry_username": creds["username"],
        "edge_lab_registry_password": creds["password"]}, sort_keys=False))
    return creds


def ensure_registry() -> dict[str, Any]:
    REGISTRY_DIR.mkdir(parents=True, exist_ok=True)
    creds = registry_credentials()
    crt, key = pki.ensure_server_cert("registry", [REGISTRY_HOST, "localhost"], ["127.0.0.1"])
    htpasswd = REGISTRY_DIR / "htpasswd"
    if not htpasswd.exists():
        line = run(["htpasswd", "-B", "-i", "-n", creds["username"]], input=creds["password"] + "\n").stdout
        write_private(htpasswd, line.strip() + "\n")
    http_secret = pki.ensure_secret(REGISTRY_DIR / ".http_secret")
    config = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "json"},
        "storage": {"filesystem": {"rootdirectory": str(REGISTRY_DIR / "data")}, "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{REGISTRY_PORT}", "secret": http_secret,
                 "tls": {"certificate": str(crt), "key": str(key)}},
        "auth": {"htpasswd": {"realm": "edgeai-lab-registry", "path": str(htpasswd)}},
    }
    cfg_file = REGISTRY_DIR / "config.yml"
    write_private(cfg_file, yaml.safe_dump(config, sort_keys=False))
    start_process("registry", ["docker-registry", "serve", str(cfg_file)],
                  env={"EDGEAI_LAB_REGISTRY_CFG": sha256_text(cfg_file.read_text())[:16]})
    if not wait_tcp("127.0.0.1", REGISTRY_PORT, 20):
        raise LabError("the registry did not start; see .lab/logs/registry.log")
    return creds


def _registry_ssl() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki.PKI / "ca.crt"))


def registry_has(repo: str, tag: str, creds: dict[str, str]) -> bool:
    req = urllib.request.Request(f"https://127.0.0.1:{REGISTRY_PORT}/v2/{repo}/manifests/{tag}", method="HEAD")
    token = base64.b64encode(f"{creds['username']}:{creds['password']}".encode()).decode()
    req.add_header("Authorization", "Basic " + token)
    req.add_header("Accept", "application/vnd.docker.distribution.manifest.v2+json")
    try:
        with urllib.request.urlopen(req, timeout=10, context=_registry_ssl()) as resp:
            return resp.status == 200
    except urllib.error.HTTPError:
        return False


def push_image(local: str, repo: str, tags: list[str], creds: dict[str, str]) -> None:
    """Push local image as 127.0.0.1:5443/<repo>:<tag> (same registry devices reach as registry.edgeai.lab)."""
    env = {"DOCKER_CONFIG": str(DOCKER_CONFIG)}
    DOCKER_CONFIG.mkdir(parents=True, exist_ok=True)
    DOCKER_CONFIG.chmod(0o700)
    docker("login", f"127.0.0.1:{REGISTRY_PORT}", "-u", creds["username"], "--password-stdin",
           input=creds["password"], env=env)
    for tag in tags:
        if registry_has(repo, tag, creds) and tag != "latest":
            continue
        ref = f"127.0.0.1:{REGISTRY_PORT}/{repo}:{tag}"
        docker("tag", local, ref)
        log(f"pushing {repo}:{tag}")
        docker("push", "-q", ref, env=env, timeout=1800)
        docker("rmi", ref, check=False)


# ---- artifact store -----------------------------------------------------------------------

def artifacts_credentials() -> dict[str, str]:
    if ARTIFACTS_CREDENTIALS.exists():
        return json.loads(ARTIFACTS_CREDENTIALS.read_text())
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    creds = {"username": "edgeai-models", "password": pki.ensure_secret(ARTIFACTS_DIR / ".password")}
    write_private(ARTIFACTS_CREDENTIALS, json.dumps(creds, indent=2) + "\n")
    write_private(ARTIFACTS_CREDENTIALS_VARS, yaml.safe_dump({
        "edge_lab_artifacts_username": creds["username"],
        "edge_lab_artifacts_password": creds["password"]}, sort_keys=False))
    return creds


def ensure_artifacts() -> dict[str, Any]:
    """The central artifact store (edgeai_lab.artifacts): files under .lab/artifacts/files."""
    artifacts_credentials()
    files = ARTIFACTS_DIR / "files"
    files.mkdir(parents=True, exist_ok=True)
    crt, key = pki.ensure_server_cert("artifacts", [ARTIFACTS_HOST, "localhost"], ["127.0.0.1"])
    argv = [str(VENV_PY if VENV_PY.exists() else "python3"), "-m", "edgeai_lab.artifacts",
            "--root", str(files), "--port", str(ARTIFACTS_PORT), "--cert", str(crt), "--key", str(key),
            "--credentials", str(ARTIFACTS_CREDENTIALS)]
    start_process("artifacts", argv, env={"PYTHONPATH": str(LAB_DIR), "EDGEAI_LAB_CODE": sha256_text(
        (LAB_DIR / "edgeai_lab" / "artifacts.py").read_bytes())[:16]})
    if not wait_tcp("127.0.0.1", ARTIFACTS_PORT, 15):
        raise LabError("the artifact store did not start; see .lab/logs/artifacts.log")
    return {"url": f"https://{ARTIFACTS_HOST}:{ARTIFACTS_PORT}", "host_url": f"https://127.0.0.1:{ARTIFACTS_PORT}",
            "root": str(files), "credentials_file": str(ARTIFACTS_CREDENTIALS),
            "credentials_vars_file": str(ARTIFACTS_CREDENTIALS_VARS), "log": str(LOGS / "artifacts.log")}


# ---- link shaping (read by the gateway process) -------------------------------------------

def links_lock() -> contextlib.AbstractContextManager[None]:
    """Serialise `lab link` calls; not the lab's state lock, which `lab up` holds for minutes."""
    return file_lock(RUN / "links.lock")


def read_links() -> dict[str, dict[str, Any]]:
    return json.loads(LINKS_FILE.read_text()) if LINKS_FILE.exists() else {}


def write_links(rules: dict[str, dict[str, Any]]) -> None:
    RUN.mkdir(parents=True, exist_ok=True)
    tmp = LINKS_FILE.with_suffix(".tmp")
    tmp.write_text(json.dumps(rules, indent=2, sort_keys=True))
    tmp.replace(LINKS_FILE)


def read_stats(newer_than: float = 0.0, timeout: float = 5.0) -> dict[str, Any]:
    """The gateway's byte counters, written at least `newer_than` (epoch seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            stats = json.loads(STATS_FILE.read_text())
            if stats["time"] >= newer_than:
                return stats
        except (OSError, ValueError, KeyError):
            pass
        if time.monotonic() > deadline:
            raise LabError("the gateway wrote no fresh counters; see .lab/logs/gateway.log")
        time.sleep(0.1)


# ---- webhook receiver (owned by the events engineer; the lab only starts it) --------------

def ensure_webhook() -> dict[str, Any] | None:
    pkg_root = LAB_DIR / "webhook_receiver"
    if not (pkg_root / "webhook_receiver" / "__main__.py").exists():
        log("webhook receiver: tests/lab/webhook_receiver not there yet, skipped")
        return None
    WEBHOOK_DIR.mkdir(parents=True, exist_ok=True)
    secret_file = WEBHOOK_DIR / "hmac_secret"
    token_file = WEBHOOK_DIR / "token"
    pki.ensure_secret(secret_file, 32)
    pki.ensure_secret(token_file, 24)
    crt, key = pki.ensure_server_cert("webhook", [WEBHOOK_HOST, "localhost"], ["127.0.0.1"])
    argv = [str(VENV_PY if VENV_PY.exists() else "python3"), "-m", "webhook_receiver",
            "--host", "127.0.0.1", "--port", str(WEBHOOK_PORT), "--state-dir", str(WEBHOOK_DIR / "state"),
            "--secret-file", str(secret_file), "--token-file", str(token_file),
            "--tls-cert", str(crt), "--tls-key", str(key)]
    # restarted when its code changes (the hash is part of the process fingerprint)
    start_process("webhook", argv, env={"PYTHONPATH": str(pkg_root),
                                        "EDGEAI_LAB_CODE": hash_tree(pkg_root)[:16]}, cwd=pkg_root)
    if not wait_tcp("127.0.0.1", WEBHOOK_PORT, 20):
        raise LabError("the webhook receiver did not start; see .lab/logs/webhook.log")
    return {"url": f"https://{WEBHOOK_HOST}:{WEBHOOK_PORT}", "host_url": f"https://127.0.0.1:{WEBHOOK_PORT}",
            "hmac_secret_file": str(secret_file), "token_file": str(token_file),
            "state_dir": str(WEBHOOK_DIR / "state"),
            "log": str(LOGS / "webhook.log")}
