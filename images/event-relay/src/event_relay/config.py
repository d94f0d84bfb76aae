"""Configuration: a YAML (or JSON) file, overridden by EDGEAI_RELAY_<KEY> environment variables."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ENV_PREFIX = "EDGEAI_RELAY_"


class ConfigError(ValueError):
    """The configuration cannot be used."""


@dataclasses.dataclass
class Config:
    device_id: str = ""
    webhook_url: str = ""
    secret_file: str = "/run/secrets/event-relay/hmac_secret"
    token_file: str = ""  # the event API's bearer token, which the relay sends
    local_token_file: str = "/run/secrets/event-relay/local_token"  # what local posters must send
    listen_host: str = "127.0.0.1"
    listen_port: int = 8780
    queue_path: str = "/var/lib/event-relay/queue.db"
    max_queue_events: int = 10000
    max_queue_bytes: int = 64 * 1024 * 1024
    max_event_age_s: float = 7 * 24 * 3600.0
    max_event_bytes: int = 64 * 1024
    max_json_depth: int = 32
    max_connections: int = 16
    client_timeout_s: float = 10.0
    overflow_policy: str = "drop_oldest"
    drop_report_interval_s: float = 10.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 60.0
    request_timeout_s: float = 10.0
    verify_tls: bool = True
    ca_file: str = ""
    inference_url: str = ""
    metrics_url: str = ""
    health_interval_s: float = 10.0
    status_interval_s: float = 300.0
    log_level: str = "INFO"
    # Filled in by load_config, never from the file or the environment.
    secret: bytes = dataclasses.field(default=b"", repr=False)
    token: str = dataclasses.field(default="", repr=False)
    local_token: str = dataclasses.field(default="", repr=False)

    def validate(self) -> None:
        if not self.device_id:
            raise ConfigError("device_id is required")
        if not self.webhook_url.startswith(("http://", "https://")):
            raise ConfigError("webhook_url must be an http:// or https:// URL")
        if self.overflow_policy not in ("drop_oldest", "reject_new"):
            raise ConfigError("overflow_policy must be drop_oldest or reject_new")
        for name in ("max_queue_events", "max_queue_bytes", "max_event_bytes", "max_connections"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        if self.max_json_depth < 2:
            raise ConfigError("max_json_depth must be at least 2 (an event with a data object)")
        if self.client_timeout_s <= 0:
            raise ConfigError("client_timeout_s must be positive")
        if not self.local_token_file:
            raise ConfigError("local_token_file is required: the local API takes events only from "
                              "processes that send the token in it (role edgeai.fleet.webhook writes it)")
        if self.backoff_initial_s <= 0 or self.backoff_max_s < self.backoff_initial_s:
            raise ConfigError("need 0 < backoff_initial_s <= backoff_max_s")


SECRETS = ("secret", "token", "local_token")
_SETTABLE = {f.name: f for f in dataclasses.fields(Config) if f.name not in SECRETS}
MIN_LOCAL_TOKEN = 16


def _coerce(name: str, value: Any) -> Any:
    kind = _SETTABLE[name].type
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        return "" if value is None else str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}: cannot use {value!r} as {kind}") from exc


def _read_file(path: str) -> dict[str, Any]:
    text = Path(path).read_text()
    if path.endswith(".json"):
        data = json.loads(text)
    else:
        try:
            import yaml
        except ImportError:  # JSON is valid YAML 1.2, so try it before giving up
            try:
                data = json.loads(text)
            except ValueError as exc:
                raise ConfigError(f"{path}: PyYAML is not installed and the file is not JSON") from exc
        else:
            data = yaml.safe_load(text)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return data


def read_secret_file(path: str, what: str, group_may_read: bool = False) -> str:
    """Read a secret from a file that only its owner may read (mode 0600 or stricter).

    With ``group_may_read`` the file's group may read it too (mode 0640): the local API token,
    which the device's own applications in that group send.
    """
    try:
        info = os.stat(path)
    except OSError as exc:
        raise ConfigError(f"{what} file {path}: {exc.strerror}") from exc
    if group_may_read:
        if info.st_mode & (stat.S_IWGRP | stat.S_IXGRP | stat.S_IRWXO):
            raise ConfigError(f"{what} file {path} must not be readable by others nor writable by its "
                              "group (mode 0600 or 0640)")
    elif info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{what} file {path} must not be readable by group or others (mode 0600)")
    try:
        value = Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{what} file {path}: {exc.strerror}") from exc
    if not value:
        raise ConfigError(f"{what} file {path} is empty")
    return value


def load_config(path: str | None, environ: Mapping[str, str]) -> Config:
    values: dict[str, Any] = {}
    if path:
        try:
            values.update(_read_file(path))
        except OSError as exc:
            raise ConfigError(f"{path}: {exc.strerror}") from exc
    unknown = sorted(set(values) - set(_SETTABLE))
    if unknown:
        raise ConfigError(f"unknown configuration keys: {', '.join(unknown)}")
    for key, value in environ.items():
        if key.startswith(ENV_PREFIX) and key != ENV_PREFIX + "CONFIG":
            name = key[len(ENV_PREFIX):].lower()
            if name in SECRETS:
                raise ConfigError(f"{key}: secrets are read from files only "
                                  "(secret_file, token_file, local_token_file)")
            if name not in _SETTABLE:
                raise ConfigError(f"unknown environment variable {key}")
            values[name] = value
    config = Config(**{k: _coerce(k, v) for k, v in values.items()})
    config.validate()
    config.secret = read_secret_file(config.secret_file, "secret").encode()
    if config.token_file:
        config.token = read_secret_file(config.token_file, "token")
    config.local_token = read_secret_file(config.local_token_file, "local token", group_may_read=True)
    if not re.fullmatch(rf"[\x21-\x7e]{{{MIN_LOCAL_TOKEN},}}", config.local_token):
        raise ConfigError(f"local token file {config.local_token_file}: the token must be at least "
                          f"{MIN_LOCAL_TOKEN} printable ASCII characters without spaces")
    return config
