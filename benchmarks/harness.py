"""What every benchmark shares: logging, statistics, CPU and memory readings, formatting, plots.

The lab's helpers (SSH, tunnels, inventories, playbooks) are in tests/lab/edgeai_lab/access.py, the HTTP load
in tests/lab/edgeai_lab/load.py: tests use them too.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from benchmarks import ROOT

PLOTS = ROOT / "docs" / "benchmarks"
CLK_TCK = os.sysconf("SC_CLK_TCK")
T0 = time.monotonic()


def logger(name: str) -> Callable[[str], None]:
    """log(msg): a line on stderr, with the benchmark's name and its seconds so far."""
    return lambda msg: print(f"[{name} bench {time.monotonic() - T0:5.0f}s] {msg}", file=sys.stderr, flush=True)


def parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser described by the docstring's first paragraph; SIGTERM runs the `finally`s."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return argparse.ArgumentParser(description=doc.split("\n\n")[0])


@contextmanager
def workdir(name: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=f"edgeai-{name}-bench-", ignore_cleanup_errors=True) as path:
        yield Path(path)


# -- statistics ----------------------------------------------------------------------------------
def pct(sorted_xs: list[float], p: float) -> float:
    return sorted_xs[min(len(sorted_xs) - 1, int(p * len(sorted_xs)))] if sorted_xs else float("nan")


def mean(xs: Iterable[float]) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else float("nan")


def ratio(a: float | None, b: float | None, none: str = "") -> str:
    """a / b as "1.23x"; `none` when either is missing or NaN (b == b is False for NaN) or b is 0."""
    return f"{a / b:.2f}x" if a is not None and b and a == a and b == b else none


def fit_line(points: list[tuple[float, float]]) -> tuple[float, float]:
    """(a, b) of cost = a + b * n through the first and last point (n ascending)."""
    (n0, c0), (n1, c1) = points[0], points[-1]
    b = (c1 - c0) / (n1 - n0) if n1 != n0 else c1 / n1
    return c0 - b * n0, b


# -- the machine ---------------------------------------------------------------------------------
def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def children_cpu() -> float:
    """User + system CPU seconds of this process's finished (and reaped) children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(wall seconds, CPU seconds of the children it waited for, its result)."""
    start, cpu = time.perf_counter(), children_cpu()
    result = fn()
    return time.perf_counter() - start, children_cpu() - cpu, result


def proc_tree(pid: int) -> list[int]:
    """pid and all its descendants."""
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError):
            parent[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    found = [pid]
    for p in found:  # grows as it goes
        found.extend(child for child, of in parent.items() if of == p)
    return found


def rss_mib(pid: int) -> float:
    """VmRSS of pid and all its descendants."""
    total = 0
    for p in proc_tree(pid):
        try:
            total += next(int(line.split()[1]) for line in Path(f"/proc/{p}/status").read_text().splitlines()
                          if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            pass
    return total / 1024


def cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds of these processes."""
    total = 0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def meminfo() -> dict[str, int]:
    return {k: int(v.split()[0]) * 1024 for k, v in
            (line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())}


# -- playbooks -----------------------------------------------------------------------------------
PROFILE_TASKS = {"ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks", "PROFILE_TASKS_TASK_OUTPUT_LIMIT": "all"}


def task_times(stdout: str) -> dict[str, float]:
    """Seconds per task name (without its role), summed, from a run's profile_tasks recap (env PROFILE_TASKS)."""
    tasks: dict[str, float] = {}
    for name, seconds in re.findall(r"^(\S.*?) -{3,} ([0-9.]+)s$", stdout[stdout.rfind("TASKS RECAP"):], re.M):
        name = name.split(" : ", 1)[-1]
        tasks[name] = tasks.get(name, 0.0) + float(seconds)
    return tasks


# -- formatting ----------------------------------------------------------------------------------
def fmt(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None or x != x else f"{x:,.{digits}f}"  # x != x: NaN


def mib(b: float) -> str:
    return f"{b / 2**20:.0f} MiB"


def table(header: list[str], rows: Iterable[Iterable[Any]], align: str = "") -> list[str]:
    """A Markdown table; align: l or r a column (default: l, then r)."""
    align = align or "l" + "r" * (len(header) - 1)
    return [f"| {' | '.join(header)} |", "| " + " | ".join("---:" if a == "r" else "---" for a in align) + " |",
            *(f"| {' | '.join(str(c) for c in row)} |" for row in rows)]


def goal(text: str, met: bool, detail: str) -> str:
    return f"Goal {text}: **{'met' if met else 'missed'}** ({detail})."


def figure(log: Callable[[str], None], path: Path, alt: str, draw: Callable[[Any], Any]) -> str:
    """The Markdown line showing the figure draw(pyplot) returns, saved to path (docs/benchmarks/)."""
    try:
        import matplotlib
    except ImportError:
        log("matplotlib is not installed (`make bench` installs it): no plot")
        return "(No plot this time: matplotlib was missing; `make bench` installs it.)"
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = draw(plt)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return f"![{alt}](benchmarks/{path.name})"
