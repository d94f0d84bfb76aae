"""Unit tests of what edgeai_lab.access reads off this machine for tests and benchmarks (no Docker):
root's room for more lab devices, devices of a test's own, and the CPU of containers from their
cgroups; and of how the lab's test helpers stop a process that leads a session of its own."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from edgeai_lab import access
from edgeai_lab.core import wait_until
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


def test_adding_a_device_tries_again_after_removing_the_half_added_one_as_often_as_asked(monkeypatch):
    calls = []
    answers = iter([access.LabAccessError("lab device add a: exited 1\nnot ready after 120 s"), '{"port": 2201}'])

    def lab(*args, timeout):
        calls.append(args[:3])
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(access, "lab", lab)
    monkeypatch.setattr(access, "remove_devices", lambda names, log=print: calls.append(("rm", *names)))
    logged = []
    assert access.add_device("a", "coral-usb", "s1", retries=1, log=logged.append) == {"port": 2201}
    assert calls == [("device", "add", "a"), ("rm", "a"), ("device", "add", "a")]
    assert logged == ["adding a failed, once more: not ready after 120 s"]
    answers = iter([access.LabAccessError("lab device add a: failed")])
    with pytest.raises(access.LabAccessError, match="lab device add a"):  # no retries: the first failure stands
        access.add_device("a", "coral-usb", "s1")


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


def test_ssh_masters_are_the_ssh_processes_under_a_folder_and_closing_ends_and_reaps_them(tmp_path):
    mine, other = tmp_path / "cp", tmp_path / "elsewhere"
    for folder in (mine, other):
        folder.mkdir()
        (folder / "ssh").symlink_to(shutil.which("sleep"))  # a process named ssh, its folder in its command line
    procs = [subprocess.Popen([str(folder / "ssh"), "60"]) for folder in (mine, other)]
    try:
        wait_until(lambda: access.ssh_masters(tmp_path), 10)
        assert access.ssh_masters(mine) == [procs[0].pid]
        assert sorted(access.ssh_masters(tmp_path)) == sorted(p.pid for p in procs)
        access.close_ssh_masters(mine)
        assert access.ssh_masters(tmp_path) == [procs[1].pid]
        assert not Path(f"/proc/{procs[0].pid}").exists()  # reaped, not left a zombie
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


INSPECT = {
    "Name": "/edgeai-inference",
    "Config": {"Image": "registry/triton:1", "Entrypoint": ["tritonserver"], "Cmd": ["--model-repository=/models"],
               "Labels": {"io.edgeai.role": "inference_server", "maintainer": "someone"}},
    "HostConfig": {"RestartPolicy": {"Name": "unless-stopped"}, "Runtime": "nvidia", "Memory": 2147483648,
                   "PortBindings": {"8002/tcp": [{"HostIp": "", "HostPort": "8002"}],
                                    "8000/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8000"}]},
                   "Devices": [{"PathOnHost": "/dev/apex_0", "PathInContainer": "/dev/apex_0"}],
                   "DeviceCgroupRules": ["c 189:* rmw"]},
    "Mounts": [{"Source": "/var/lib/edgeai/models", "Destination": "/models", "RW": True},
               {"Source": "/etc/edgeai", "Destination": "/etc/edgeai", "RW": False}],
}


def test_a_replacement_run_keeps_the_containers_flags_but_the_mount_the_image_now_holds():
    assert access.replacement_run(INSPECT, "naive:3", "/models") == [
        "docker", "run", "-d", "--name", "edgeai-inference", "--restart", "unless-stopped", "--runtime", "nvidia",
        "--memory", "2147483648", "--entrypoint", "tritonserver", "-p", "127.0.0.1:8000:8000", "-p", "8002:8002",
        "--device", "/dev/apex_0:/dev/apex_0", "--device-cgroup-rule", "c 189:* rmw",
        "-v", "/etc/edgeai:/etc/edgeai:ro", "--label", "io.edgeai.role=inference_server",
        "naive:3", "--model-repository=/models"]
    bare = dict(INSPECT, Config={"Image": "x"}, HostConfig={"Runtime": "runc"}, Mounts=[])
    assert access.replacement_run(bare, "naive:3", "/models") == ["docker", "run", "-d", "--name", "edgeai-inference",
                                                                  "naive:3"]


def test_the_load_window_of_a_version_is_read_from_either_servers_log():
    since = 1_700_000_000.0  # 2023-11-14T22:13:20Z
    triton = ("2023-11-14T22:13:21.500000000Z I1114 model_lifecycle.cc:472] loading: detector:1\n"
              "2023-11-14T22:13:22.000000000Z I1114 model_lifecycle.cc:472] loading: detector:2\n"
              "2023-11-14T22:13:22.250000000Z I1114 other.cc:1] unrelated line\n"
              "2023-11-14T22:13:23.750000000Z I1114 model_lifecycle.cc:835] successfully loaded 'detector'\n")
    assert access.server_load_window(triton, "detector", 2, since) == pytest.approx((2.0, 3.75))
    litert = ('2023-11-14T22:13:25.000000000Z {"msg": "model loaded", "model": "detector", "versions": [1]}\n'
              '2023-11-14T22:13:26.000000000Z not json about detector {\n'
              '2023-11-14T22:13:27.500000000Z {"msg": "model loaded", "model": "detector", "versions": [1, 2], '
              '"load_s": 0.5}\n')
    assert access.server_load_window(litert, "detector", 2, since) == pytest.approx((7.0, 7.5))
    assert access.server_load_window(litert, "detector", 3, since) is None
    assert access.server_load_window(triton, "other-model", 2, since) is None
