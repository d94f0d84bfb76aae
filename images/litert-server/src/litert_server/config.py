"""Settings: defaults < YAML file < environment (EDGEAI_LITERT_*) < command line."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

ENV_PREFIX = "EDGEAI_LITERT_"


@dataclass
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    metrics_host: str = "127.0.0.1"  # loopback unless asked otherwise; empty: same as host
    metrics_port: int = 8002  # 0 disables the metrics listener
    model_repository: str = "/models"
    load_models: list[str] = field(default_factory=list)  # "*" loads every model at start
    token: str = field(default="", repr=False)
    token_file: str = ""
    max_request_bytes: int = 64 * 1024 * 1024
    max_json_elements: int = 1_000_000  # values in one JSON body (each costs ~32-40 bytes parsed)
    max_json_depth: int = 32
    max_connections: int = 64  # open connections (one handler thread each); beyond: 503
    max_inflight: int = 4  # POST requests being received or processed at once
    inflight_wait_s: float = 5.0  # how long a POST waits for an in-flight slot before 503
    request_timeout_s: float = 60.0  # the most time to receive one request body
    interpreters_per_model: int = 2
    num_threads: int = 1
    device_root: str = "/"
    edgetpu_library: str = "libedgetpu.so.1"
    idle_timeout_s: float = 120.0
    log_level: str = "info"

    def auth_token(self) -> str:
        if self.token:
            return self.token
        if self.token_file:
            return Path(self.token_file).read_text().strip()
        return ""


_FIELDS = {f.name: f for f in fields(Settings)}


def _coerce(name: str, value: Any) -> Any:
    default = getattr(Settings(), name)
    try:
        if isinstance(default, bool):
            return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes", "on")
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, list):
            if isinstance(value, str):
                return [v.strip() for v in value.split(",") if v.strip()]
            return [str(v) for v in value]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"setting {name}: cannot use {value!r}: {exc}") from exc
    return str(value)


def _apply(settings: Settings, values: Mapping[str, Any], source: str) -> None:
    for key, value in values.items():
        if key not in _FIELDS:
            raise ValueError(f"{source}: unknown setting {key!r}")
        if value is not None:
            setattr(settings, key, _coerce(key, value))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m litert_server", description="LiteRT inference server (KServe v2 REST, Triton repository layout)"
    )
    p.add_argument("--config", help="YAML settings file (also EDGEAI_LITERT_CONFIG)")
    p.add_argument("--host", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="HTTP port (default 8000)")
    p.add_argument("--metrics-host", dest="metrics_host", help="metrics listen address (default 127.0.0.1)")
    p.add_argument("--metrics-port", dest="metrics_port", type=int, help="metrics port (default 8002, 0 = off)")
    p.add_argument("--model-repository", dest="model_repository", help="model repository (default /models)")
    p.add_argument(
        "--load-model", dest="load_models", action="append", help="model to load at start (repeatable; '*' = all)"
    )
    p.add_argument("--token-file", dest="token_file", help="file holding the bearer token")
    p.add_argument("--max-request-bytes", dest="max_request_bytes", type=int, help="larger bodies get 413")
    p.add_argument("--max-json-elements", dest="max_json_elements", type=int)
    p.add_argument("--max-json-depth", dest="max_json_depth", type=int)
    p.add_argument("--max-connections", dest="max_connections", type=int, help="open connections (default 64)")
    p.add_argument("--max-inflight", dest="max_inflight", type=int, help="POST requests at once (default 4)")
    p.add_argument("--inflight-wait-s", dest="inflight_wait_s", type=float)
    p.add_argument("--request-timeout-s", dest="request_timeout_s", type=float)
    p.add_argument("--interpreters-per-model", dest="interpreters_per_model", type=int)
    p.add_argument("--num-threads", dest="num_threads", type=int)
    p.add_argument("--device-root", dest="device_root", help="root for Edge TPU detection (default /)")
    p.add_argument("--edgetpu-library", dest="edgetpu_library")
    p.add_argument("--log-level", dest="log_level")
    return p


def load_settings(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    args = vars(_parser().parse_args(argv))
    settings = Settings()
    path = args.pop("config") or env.get(ENV_PREFIX + "CONFIG")
    if path:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError(f"{path}: settings file must hold a mapping")
        _apply(settings, data, path)
    _apply(settings, {k: env[ENV_PREFIX + k.upper()] for k in _FIELDS if ENV_PREFIX + k.upper() in env}, "environment")
    _apply(settings, args, "command line")
    _check(settings)
    return settings


def _check(settings: Settings) -> None:
    for name in ("max_request_bytes", "max_json_elements", "max_json_depth", "max_connections", "max_inflight"):
        if getattr(settings, name) < 1:
            raise ValueError(f"setting {name} must be at least 1")
    if not settings.inflight_wait_s >= 0:
        raise ValueError("setting inflight_wait_s must be a number >= 0")
    for name in ("request_timeout_s", "idle_timeout_s"):
        if not getattr(settings, name) > 0:
            raise ValueError(f"setting {name} must be a number > 0")
