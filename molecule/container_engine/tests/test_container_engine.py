# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The device's own engine: configured, trusting the lab CA, logged in, running a pulled container."""

from __future__ import annotations

import json

REGISTRY = "registry.edgeai.lab:5443"


def test_engine_installed_where_missing(host):
    """prepare removed docker.io from the Coral host; the role installed it again."""
    assert host.package("docker.io").is_installed
    assert host.file("/usr/sbin/dockerd").exists or host.file("/usr/bin/dockerd").exists


def test_engine_enabled_and_running(host):
    service = host.service("docker")
    assert service.is_running
    assert service.is_enabled


def test_daemon_json_merged_and_user_keys_kept(host):
    config = json.loads(host.file("/etc/docker/daemon.json").content_string)
    assert config["max-concurrent-downloads"] == 2
    assert config["log-level"] == "warn"
    assert config["log-opts"] == {"max-size": "10m"}
    info = json.loads(host.check_output("docker info --format '{{json .}}'"))
    assert info["LoggingDriver"] == "json-file"


def test_registry_ca_trusted(host):
    ca = host.file(f"/etc/docker/certs.d/{REGISTRY}/ca.crt")
    assert ca.is_file
    assert "BEGIN CERTIFICATE" in ca.content_string


def test_credentials_stored_privately(host):
    cfg = host.file("/root/.docker/config.json")
    assert cfg.mode == 0o600
    assert REGISTRY in json.loads(cfg.content_string)["auths"]


def test_pulls_over_tls_with_auth_and_runs(host, probe_image):
    host.run(f"docker image rm -f {probe_image}")
    pull = host.run(f"docker pull -q {probe_image}")
    assert pull.rc == 0, pull.stderr
    run = host.run(f"docker run --rm --entrypoint /bin/sh {probe_image} -c 'echo edge-$((6*7))'")
    assert run.rc == 0, run.stderr
    assert run.stdout.strip() == "edge-42"


def test_pull_without_credentials_is_refused(host, probe_image):
    """The registry really wants auth: the same pull with an empty client config fails."""
    result = host.run(f"DOCKER_CONFIG=$(mktemp -d) docker pull -q {probe_image.rsplit(':', 1)[0]}:no-such-tag-x")
    assert result.rc != 0
    assert "unauthorized" in (result.stderr + result.stdout).lower() or "no basic auth" in result.stderr.lower()
