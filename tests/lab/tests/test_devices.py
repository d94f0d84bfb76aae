"""Unit tests of when the lab keeps a device container it finds, and when it makes it again (no Docker)."""

from __future__ import annotations

from typing import Any

import pytest
from edgeai_lab import devices

IMAGE, PROFILE = "edgeai-lab-device:abc", "agx-orin"
MADE = {"ssh_pub": "ssh-ed25519 AAAA lab-1", "ca_crt": b"CA 1", "keyring": b"keyring 1",
        "meta": {"id": "site-a-orin-01", "site": "site-a", "profile": PROFILE, "ssh_port": 22101},
        "gateway": "10.213.1.1"}


def info(made: str | None, image: str = IMAGE, profile: str = PROFILE,
         hosts: tuple[str, ...] = devices.CENTRAL_HOSTS) -> dict[str, Any]:
    """What `docker container inspect` says of a device container, the fields the lab reads."""
    labels = {"edgeai.lab.profile": profile} | ({devices.MADE_LABEL: made} if made else {})
    return {"Config": {"Image": image, "Labels": labels},
            "HostConfig": {"ExtraHosts": [f"{h}:10.213.1.1" for h in hosts]}}


def test_a_container_made_by_this_lab_is_kept_and_the_digest_is_stable():
    made = devices.made_from(**MADE)
    assert made == devices.made_from(**MADE)
    assert devices.stale(info(made), IMAGE, PROFILE, made) is None


@pytest.mark.parametrize("field, other", [
    ("ssh_pub", "ssh-ed25519 BBBB lab-2"),  # another checkout's .lab: its key is refused
    ("ca_crt", b"CA 2"),
    ("keyring", b"keyring 2"),
    ("meta", {**MADE["meta"], "ssh_port": 22105}),
    ("meta", {**MADE["meta"], "site": "site-b"}),
    ("gateway", "10.213.2.1"),
])
def test_a_container_made_with_another_key_ca_port_or_site_is_made_again(field, other):
    theirs = devices.made_from(**{**MADE, field: other})
    ours = devices.made_from(**MADE)
    assert theirs != ours
    assert "another lab" in devices.stale(info(theirs), IMAGE, PROFILE, ours)


def test_a_container_without_the_label_is_made_again():
    assert "another lab" in devices.stale(info(None), IMAGE, PROFILE, devices.made_from(**MADE))


def test_image_profile_and_central_hosts_still_count():
    made = devices.made_from(**MADE)
    assert devices.stale(info(made, image="edgeai-lab-device:old"), IMAGE, PROFILE, made) == "image or profile changed"
    assert devices.stale(info(made, profile="orin-nano"), IMAGE, PROFILE, made) == "image or profile changed"
    missing = devices.stale(info(made, hosts=devices.CENTRAL_HOSTS[:-1]), IMAGE, PROFILE, made)
    assert missing == f"made before {devices.CENTRAL_HOSTS[-1]} existed"
