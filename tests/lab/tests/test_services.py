"""Unit tests of how the lab starts its host processes (no Docker). The stand-ins are `sh`, which exits
well within the 0.3 s start_process() gives a process to fail at once."""

from __future__ import annotations

import pytest
from edgeai_lab import services
from edgeai_lab.core import LabError


@pytest.fixture
def state(tmp_path, monkeypatch):
    monkeypatch.setattr(services, "RUN", tmp_path / "run")
    monkeypatch.setattr(services, "LOGS", tmp_path / "logs")
    return tmp_path


def test_a_process_that_cannot_bind_its_port_says_so_and_names_the_other_lab(state):
    said = "listen tcp 127.0.0.1:5443: bind: address already in use"
    with pytest.raises(LabError) as err:
        services.start_process("stand-in", ["sh", "-c", f"echo '{said}'; exit 1"])
    assert said in str(err.value) and "another lab" in str(err.value) and "stand-in.log" in str(err.value)


def test_a_process_that_exits_for_another_reason_shows_its_last_line_only(state):
    with pytest.raises(LabError) as err:
        services.start_process("stand-in", ["sh", "-c", "echo first; echo bad config; exit 2"])
    assert "exited at once (2): bad config;" in str(err.value) and "another lab" not in str(err.value)
