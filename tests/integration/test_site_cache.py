"""Role edgeai.fleet.site_cache on a site of 4 lab devices of its own.

One device runs the site cache (images/site-cache, pulled from the lab registry); all four use
it through the roles' own wiring (inference_server's image tasks, model_deploy's staging). The
lab gateway relays each site's connections to the centre from the site's own loopback address
(127.213.<n>.1), so the central registry's and artifact store's logs say what crossed this
site's link: each layer of a new image and each slice of a new artifact exactly once, although
four devices fetched them at the same time. With the cache stopped, a device falls back to the
centre and says so.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from edgeai_lab import access
from edgeai_lab.centre import PLAYBOOKS, Centre, object_gets, site_cache_inventory, site_source

pytestmark = [pytest.mark.lab, pytest.mark.docker]

SITE = "cache-site"
DEVICES = [f"{SITE}-{i}" for i in range(1, 5)]
CACHE_HOST = DEVICES[0]
PROFILE = "coral-usb"  # the lightest profile: nothing from a vendor repository is installed
SLICE = 4 * 1024 * 1024  # site_cache_slice_size's default (4m)


def _ansible(workdir: Path, playbook: str, *args: str) -> tuple[str, dict[str, dict[str, int]]]:
    records = workdir / "records"
    shutil.rmtree(records, ignore_errors=True)
    records.mkdir()
    proc = access.run_playbook_ok(workdir / "hosts.yml", PLAYBOOKS / playbook, "-e", f"record_dir={records}", *args,
                                  timeout=600)
    recap = {host: {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", counts)}
             for host, counts in re.findall(r"^(\S+)\s*:\s*(ok=.*)$", proc.stdout, re.MULTILINE)}
    return proc.stdout, recap


def _sources(workdir: Path, kind: str) -> dict[str, dict[str, Any]]:
    """What each device recorded about the source of its last pull or stage."""
    return {f.stem[len(kind) + 1:]: json.loads(f.read_text()) for f in (workdir / "records").glob(f"{kind}-*.json")}


def _on_device(lab: dict[str, Any], device: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """A command in a device of this module (the session's `lab_ssh` knows only the devices it saw)."""
    return subprocess.run(["docker", "exec", lab["devices"][device]["container"], *argv],
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def site(lab: dict[str, Any], tmp_path_factory) -> dict[str, Any]:
    """4 devices of this module at their own site, engines ready, the cache running on the first."""
    if "site-cache" not in lab.get("images", {}) or not lab.get("artifacts"):
        pytest.fail("the lab has no site-cache image or no artifact store: `tests/lab/lab up` makes both")
    centre = Centre(lab)
    try:
        with access.own_devices(dict.fromkeys(DEVICES, (PROFILE, SITE)), timeout=300):
            status = access.status()
            workdir = tmp_path_factory.mktemp("site-cache")
            site_cache_inventory(workdir / "hosts.yml", status, {SITE: DEVICES})
            out, recap = _ansible(workdir, "caches.yml")
            assert recap[CACHE_HOST]["failed"] == 0
            assert (workdir / f"{SITE}-device-password").read_text().strip() not in out
            yield {"lab": status, "workdir": workdir, "source": site_source(status, CACHE_HOST), "centre": centre}
    finally:
        centre.clean()


def test_cache_role_is_idempotent(site):
    _out, again = _ansible(site["workdir"], "caches.yml", "--diff")
    assert again[CACHE_HOST]["changed"] == 0, "a second run must change nothing"
    _out, checked = _ansible(site["workdir"], "caches.yml", "--check", "--diff")
    assert checked[CACHE_HOST]["changed"] == 0


def test_four_devices_pull_each_layer_once_from_the_centre(site):
    lab, centre = site["lab"], site["centre"]
    ref = centre.push_image(f"edgeai-test/site-cache-{secrets.token_hex(4)}", [3_000_000, 2_000_000])
    blobs = centre.blobs(ref)
    offsets = centre.offsets()

    _out, recap = _ansible(site["workdir"], "pull.yml", "-e", f"image={ref}")  # 4 devices at once (forks)
    assert all(recap[d]["failed"] == 0 for d in DEVICES)
    cache_registry = f"{lab['devices'][CACHE_HOST]['address']}:5443"
    pulled_from = {h: s["registry"] for h, s in _sources(site["workdir"], "pull").items()}
    assert pulled_from == dict.fromkeys(DEVICES, cache_registry)

    responses = centre.served(offsets, site["source"])
    for digest, size in blobs.items():
        served = object_gets(responses, blobs=[digest])
        assert len(served) == 1, f"{digest} was served {len(served)} times to {SITE}: {served}"
        assert served[0].bytes == size
    for device in DEVICES:  # every device has it, under its central name
        assert _on_device(lab, device, "docker", "image", "inspect", ref).returncode == 0, device


def test_four_devices_fetch_each_artifact_slice_once(site):
    centre, size = site["centre"], 10_000_000
    name = f"site-cache-{secrets.token_hex(4)}.bin"
    url, digest = centre.put_artifact(name, size)
    offsets = centre.offsets()
    _out, recap = _ansible(site["workdir"], "stage.yml", "-e", f"url={url}", "-e", f"sha256={digest}",
                           "-e", "version=1")
    assert all(recap[d]["failed"] == 0 for d in DEVICES)
    sources = _sources(site["workdir"], "stage")
    assert all(s["result"] == "staged" and s["bytes"] == size
               and s["fetched_from"].startswith("https://10.213.") for s in sources.values()), sources

    served = object_gets(centre.served(offsets, site["source"]), artifact=name)
    ranges = sorted(r.range for r in served)
    assert len(served) == math.ceil(size / SLICE), served
    assert len(set(ranges)) == len(ranges), f"a slice crossed the link twice: {ranges}"
    assert sum(r.bytes for r in served) == size


def test_a_device_falls_back_to_the_centre_when_the_cache_is_down(site):
    lab, centre, device = site["lab"], site["centre"], DEVICES[1]
    ref = centre.push_image(f"edgeai-test/site-cache-{secrets.token_hex(4)}", [500_000])
    layer = max(centre.blobs(ref).items(), key=lambda kv: kv[1])
    name = f"site-cache-{secrets.token_hex(4)}.bin"
    url, digest = centre.put_artifact(name, 1_000_000)
    assert _on_device(lab, CACHE_HOST, "docker", "stop", "edgeai-site-cache").returncode == 0
    try:
        offsets = centre.offsets()
        out, _recap = _ansible(site["workdir"], "pull.yml", "-e", f"image={ref}", "-e", f"targets={device}")
        source = _sources(site["workdir"], "pull")[device]
        assert source["registry"] == lab["registry"]["host"]
        assert source["warning"].startswith(f"site cache {lab['devices'][CACHE_HOST]['address']}:5443 did not answer")
        assert "WARNING: site cache" in out
        served = object_gets(centre.served(offsets, site["source"]), blobs=[layer[0]])
        assert [r.bytes for r in served] == [layer[1]]  # straight from the centre

        out, _recap = _ansible(site["workdir"], "stage.yml", "-e", f"url={url}", "-e", f"sha256={digest}",
                               "-e", "version=2", "-e", f"targets={device}")
        source = _sources(site["workdir"], "stage")[device]
        assert source["warning"].startswith("site cache did not deliver https://10.213."), source
        assert source["fetched_from"] == url and source["result"] == "staged"
        served = object_gets(centre.served(offsets, site["source"]), artifact=name)
        assert [(r.range, r.bytes) for r in served] == [(None, 1_000_000)]  # whole, not in slices
    finally:
        _on_device(lab, CACHE_HOST, "docker", "start", "edgeai-site-cache")
