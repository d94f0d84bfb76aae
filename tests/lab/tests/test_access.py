"""Unit tests of what edgeai_lab.access reads off this machine for tests and benchmarks (no Docker):
root's room for more lab devices, devices of a test's own, and the CPU of containers from their
cgroups; and of how the lab's test helpers stop a process that leads a session of its own."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from edgeai_lab import access
from webhook_receiver.testing import stop_process


def test_room_for_devices_is_what_the_limit_leaves_after_what_is_held(monkeypatch):
    monkeypatch.setattr(access, "inotify_instances", lambda: ({"edgeai-lab-a": 7, "": 21}, 128))
    assert access.room_for(10) == (100, 128)
    assert access.room_for(2, reserve=16) == (84, 128)


def test_no_room_names_what_is_held_the_limit_and_what_to_do(monkeypatch):
    monkeypatch.setattr(access, "inotify_instances", lambda: ({"edgeai-lab-a": 7, "": 100}, 128))
    with pytest.raises(access.LabAccessError) as err:
        access.room_for(4)  # 21 free, 28 needed
    text = str(err.value)
    assert "107 of its 128" in text and "4 more lab devices" in text
    assert "max_user_instances" in text and "scripts/host-setup" in text


def _fake_lab(monkeypatch, present, fail_on=None):
    """The lab's device commands recorded, not run: `present` devices exist; adding `fail_on` fails."""
    calls = []
    monkeypatch.setattr(access, "status", lambda: {"devices": dict.fromkeys(present, {})})
    monkeypatch.setattr(access, "room_for", lambda n: calls.append(("room", n)))

    def add(name, profile, site, *options, timeout):
        calls.append(("add", name, profile, site, *options))
        if name == fail_on:
            raise access.LabAccessError(f"lab device add {name}: failed")
        return {"port": 2200 + len(calls)}

    monkeypatch.setattr(access, "add_device", add)
    monkeypatch.setattr(access, "remove_devices", lambda names, log=print: calls.append(("rm", sorted(names))))
    return calls


def test_own_devices_removes_leftovers_checks_room_adds_and_removes_all_at_the_end(monkeypatch):
    calls = _fake_lab(monkeypatch, present=["a", "other"])
    with access.own_devices({"a": ("coral-usb", "s1"), "b": ("agx-orin", "s2", "--ring", "canary")}) as added:
        assert set(added) == {"a", "b"} and all("port" in v for v in added.values())
        calls.append(("body",))
    assert calls == [("rm", ["a"]), ("room", 2), ("add", "a", "coral-usb", "s1"),
                     ("add", "b", "agx-orin", "s2", "--ring", "canary"), ("body",), ("rm", ["a", "b"])]


def test_own_devices_removes_what_it_added_when_adding_fails_half_way(monkeypatch):
    calls = _fake_lab(monkeypatch, present=[], fail_on="b")
    with pytest.raises(access.LabAccessError, match="lab device add b"):
        with access.own_devices({"a": ("coral-usb", "s1"), "b": ("coral-usb", "s1")}):
            calls.append(("body",))
    assert ("body",) not in calls and calls[-1] == ("rm", ["a", "b"])


def test_container_cpu_is_the_sum_of_their_cpuacct_in_seconds_and_a_gone_one_counts_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(access, "CGROUP_CPU", tmp_path)
    for cid, ns in (("aaa", 1_500_000_000), ("bbb", 250_000_000)):
        (tmp_path / cid).mkdir()
        (tmp_path / cid / "cpuacct.usage").write_text(f"{ns}\n")
    assert access.containers_cpu_s(["aaa", "bbb", "gone"]) == pytest.approx(1.75)
    assert access.containers_cpu_s([]) == 0


def test_stopping_a_session_leader_ends_its_children_too():
    # the leader starts a child that ignores nothing and outlives it unless the group is signalled
    leader = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                               "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
                               "print(p.pid, flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    child = int(leader.stdout.readline())
    stop_process(leader, grace=5)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.05)
    assert leader.returncode is not None and not _alive(child)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


def test_registry_inventory_gives_each_device_the_labs_vars_and_its_own_through_the_plugin(tmp_path):
    devices = {"d1": {"ssh": {"port": 2201}, "profile": "agx-orin"},
               "d2": {"ssh": {"port": 2202}, "profile": "coral-usb"}}
    fleet = {"d1": {"site": "s1", "platform": "jetson", "hardware": "agx-orin", "ring": "canary",
                    "vars": {"inference_server_model": {"name": "m"}, "edge_lab": "overridden"}},
             "d2": {"site": "s1", "platform": "coral", "hardware": "coral-usb"}}
    config = access.registry_inventory(tmp_path / "inv", fleet, devices)
    proc = subprocess.run([str(access.BIN / "ansible-inventory"), "-i", str(config), "--list"], cwd=access.REPO,
                          env=access.playbook_env(), capture_output=True, text=True, timeout=120, check=True)
    # a registry's strings stay data: marked unsafe (never templated), which the hook takes off for the comparison
    hostvars = json.loads(proc.stdout, object_hook=lambda d: d.get("__ansible_unsafe", d))["_meta"]["hostvars"]
    assert hostvars["d1"]["ansible_port"] == 2201 and hostvars["d2"]["ansible_port"] == 2202
    assert hostvars["d1"]["inference_server_model"] == {"name": "m"} and hostvars["d1"]["edge_lab"] == "overridden"
    assert "inference_server_model" not in hostvars["d2"] and hostvars["d2"]["edge_lab"] is True
    assert hostvars["d1"]["edge_ring"] == "canary" and hostvars["d2"]["edge_ring"] == "broad"
    assert hostvars["d2"]["ansible_ssh_private_key_file"].endswith("id_ed25519")
