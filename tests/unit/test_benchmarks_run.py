"""benchmarks/run.py: refreshing some sections of docs/benchmarks.md keeps the others."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_SPEC = importlib.util.spec_from_file_location("bench_run", ROOT / "benchmarks" / "run.py")
run = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(run)

MARKED = """# Benchmarks

<!-- bench: inventory -->
## Inventory

| a | b |

Reproduce: `.venv/bin/python benchmarks/inventory/bench.py` (run 2026-11-27 15:00 UTC; machine: M1).

<!-- bench: relay -->
## Event relay

Reproduce: `.venv/bin/python benchmarks/relay/bench.py` (run 2026-11-27 10:42 UTC; machine: M2).
"""


def test_sections_are_read_by_their_marker():
    sections = run.read_sections(MARKED, {"inventory", "relay"})
    assert set(sections) == {"inventory", "relay"}
    assert sections["inventory"].startswith("## Inventory")
    assert "machine: M1" in sections["inventory"]
    assert "## Event relay" not in sections["inventory"]


def test_unknown_sections_are_dropped():
    assert set(run.read_sections(MARKED, {"relay"})) == {"relay"}


def test_an_unknown_benchmark_name_is_refused(capsys):
    assert run.main(["no-such-bench"]) == 1
    assert "no benchmark named no-such-bench" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["inventory", "litert", "model_update", "relay", "rollout", "site_bandwidth"])
def test_every_section_of_the_committed_file_is_recognised(name):
    sections = run.read_sections((ROOT / "docs" / "benchmarks.md").read_text(), {name})
    assert set(sections) == {name}


def test_arguments_after_a_double_dash_go_to_the_benchmark_and_into_its_reproduce_line(tmp_path, monkeypatch):
    bench = tmp_path / "benchmarks" / "fake" / "bench.py"
    bench.parent.mkdir(parents=True)
    bench.write_text("import sys\nprint('## Fake', *sys.argv[1:])\n")
    monkeypatch.setattr(run, "ROOT", tmp_path)
    out = tmp_path / "benchmarks.md"
    assert run.main(["--out", str(out), "fake", "--", "--devices", "8,24"]) == 0
    text = out.read_text()
    assert "## Fake --devices 8,24" in text
    assert "Reproduce: `.venv/bin/python -m benchmarks.fake.bench --devices 8,24` (run " in text
    assert set(run.read_sections(text, {"fake"})) == {"fake"}
