"""What every benchmark shares: arguments, logging, statistics, CPU and memory readings, formatting, plots. What
tests use too (the lab's devices, SSH, inventories, playbooks, HTTP load) is in the lab's package, tests/lab."""

import argparse
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

import psutil

from benchmarks import ROOT

PLOTS = ROOT / "docs" / "benchmarks"
T0 = time.monotonic()


def logger(name: str) -> Callable[[str], None]:
    """log(msg): a line on stderr, with the benchmark's name and its seconds so far."""
    return lambda msg: print(f"[{name} bench {time.monotonic() - T0:5.0f}s] {msg}", file=sys.stderr, flush=True)


def arguments(doc: str, argv: list[str] | None, **flags: tuple[Any, str]) -> argparse.Namespace:
    """argv parsed: --a-b for each a_b=(default, help), of its default's type (False: a switch); described by the
    docstring's first paragraph. SIGTERM from here on runs the `finally`s."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    for name, (default, text) in flags.items():
        switch = default is False
        ap.add_argument(f"--{name.replace('_', '-')}", help=text if switch else f"{text} (default {default})",
                        **({"action": "store_true"} if switch else {"type": type(default), "default": default}))
    return ap.parse_args(argv)


@contextmanager
def workdir(name: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=f"edgeai-{name}-bench-", ignore_cleanup_errors=True) as path:
        yield Path(path)


# -- statistics ----------------------------------------------------------------------------------
def pct(sorted_xs: list[float], p: float) -> float:
    return sorted_xs[min(len(sorted_xs) - 1, int(p * len(sorted_xs)))] if sorted_xs else float("nan")


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
    return [pid, *(child.pid for child in psutil.Process(pid).children(recursive=True))]


def total(pids: Iterable[int], read: Callable[[psutil.Process], float]) -> float:
    """The sum of read(process) over those still there."""
    found = 0.0
    for pid in pids:
        with suppress(psutil.Error):
            found += read(psutil.Process(pid))
    return found


def rss_mib(pid: int) -> float:
    """Resident memory (VmRSS) of pid and all its descendants."""
    return total(proc_tree(pid), lambda p: p.memory_info().rss) / 2**20


def cpu_s(pids: Iterable[int]) -> float:
    """User + system CPU seconds of these processes."""
    return total(pids, lambda p: sum(p.cpu_times()[:2]))


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


def goal_under(what: str, value: float, limit: float, show: str = "{:.3f} s", extra: str = "") -> str:
    """A bullet: the goal `what` under `limit`, the value and, when missed, by how much (`extra` then too)."""
    met = value < limit
    return "- " + goal(f"{what} under {show.format(limit)}", met,
                       show.format(value) + ("" if met else f", {value / limit:.2f}x the goal{extra}"))


def paragraphs(text: str) -> list[str]:
    """Prose written across indented lines, as Markdown paragraphs (one line each, an empty line between)."""
    return [line for para in text.split("\n\n") for line in ("", " ".join(para.split()))][1:]


def figure(name: str, alt: str, draw: Callable[[Any], Any]) -> str:
    """The Markdown line showing the figure draw(pyplot) returns, saved as docs/benchmarks/<name>.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = draw(plt)
    PLOTS.mkdir(parents=True, exist_ok=True)
    fig.savefig(PLOTS / f"{name}.png", dpi=80)
    plt.close(fig)
    return f"![{alt}](benchmarks/{name}.png)"
