"""Unit tests of what edgeai_lab.access reads off this machine for tests and benchmarks (no Docker):
root's room for more lab devices, and the CPU of containers from their cgroups; and of how the lab's
test helpers stop a process that leads a session of its own."""

from __future__ import annotations

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
