from __future__ import annotations

import pytest

from event_relay.config import ConfigError, load_config


def private_file(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    path.chmod(0o600)
    return path


@pytest.fixture
def secret(tmp_path):
    return private_file(tmp_path, "secret", "s3cret\n")


@pytest.fixture
def local_token(tmp_path):
    return private_file(tmp_path, "local_token", "local-api-token-0123456789\n")


def write(tmp_path, text):
    path = tmp_path / "relay.yml"
    path.write_text(text)
    return str(path)


def test_file_then_environment(tmp_path, secret, local_token):
    path = write(tmp_path, f"device_id: d1\nwebhook_url: https://e.example/v1/events\nsecret_file: {secret}\n"
                           f"local_token_file: {local_token}\nmax_queue_events: 5\n")
    config = load_config(path, {"EDGEAI_RELAY_MAX_QUEUE_EVENTS": "7", "EDGEAI_RELAY_VERIFY_TLS": "false"})
    assert config.device_id == "d1" and config.max_queue_events == 7 and config.verify_tls is False
    assert config.secret == b"s3cret"
    assert "s3cret" not in repr(config)
    assert config.local_token == "local-api-token-0123456789" and "local-api-token" not in repr(config)


def test_secret_file_must_be_private(tmp_path, secret):
    secret.chmod(0o644)
    path = write(tmp_path, f"device_id: d1\nwebhook_url: https://e/v1/events\nsecret_file: {secret}\n")
    with pytest.raises(ConfigError, match="0600"):
        load_config(path, {})


def test_secret_never_from_environment(tmp_path, secret):
    path = write(tmp_path, f"device_id: d1\nwebhook_url: https://e/v1/events\nsecret_file: {secret}\n")
    with pytest.raises(ConfigError, match="files only"):
        load_config(path, {"EDGEAI_RELAY_SECRET": "x"})


@pytest.mark.parametrize("text,match", [
    ("webhook_url: https://e/v1/events\n", "device_id"),
    ("device_id: d\nwebhook_url: ftp://e\n", "webhook_url"),
    ("device_id: d\nwebhook_url: https://e\nbogus: 1\n", "unknown"),
    ("device_id: d\nwebhook_url: https://e\nmax_queue_events: many\n", "max_queue_events"),
])
def test_bad_config(tmp_path, secret, text, match):
    with pytest.raises(ConfigError, match=match):
        load_config(write(tmp_path, text + f"secret_file: {secret}\n"), {})
