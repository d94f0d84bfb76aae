# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""scripts/run-parallel, as make test runs it: exit status and the failed stream's replayed tail."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "run-parallel"


def run(*streams: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *streams], capture_output=True, text=True,
                          timeout=60, check=False)


def test_all_passing_streams_exit_zero_and_replay_nothing():
    result = run("a=echo one", "b=echo two")
    assert result.returncode == 0
    assert "once more" not in result.stdout
    assert "run-parallel: a passed" in result.stdout and "run-parallel: b passed" in result.stdout


def test_a_failed_streams_tail_comes_last_after_a_longer_stream():
    # the failing stream ends first; the other keeps printing, as molecule does after integration
    result = run("integration=for i in $(seq 1 100); do echo line$i; done; exit 2",
                 "molecule=sleep 1; for i in $(seq 1 200); do echo noise$i; done")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[-1] == "run-parallel: failed: integration"
    replay = [line for line in lines if line.startswith("  integration | ")]
    # the last 60 lines of the failed stream, in order, and none of the other stream's
    assert replay == [f"  integration | line{i}" for i in range(41, 101)]
    assert lines.index(replay[0]) > max(i for i, line in enumerate(lines) if "noise200" in line)


def test_a_malformed_argument_is_refused_with_the_usage():
    result = run("no-equals-sign")
    assert result.returncode != 0
    assert "is not NAME=COMMAND" in result.stderr
