"""Run every benchmark under benchmarks/<name>/bench.py and write docs/benchmarks.md.

Each bench.py prints a Markdown section (a heading, what it compares, a table with ratios)
on stdout. Benchmarks are not tests: they run only through `make bench`, never in CI. This
machine is shared and noisy, so every benchmark compares side by side within one run.

Usage: python benchmarks/run.py [name ...]
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} cores ({cpu}), {mem_gib:.0f} GiB, {platform.platform()}, "
        f"Python {platform.python_version()}"
    )


def main(argv: list[str]) -> int:
    benches = sorted(p for p in (ROOT / "benchmarks").glob("*/bench.py") if not argv or p.parent.name in argv)
    if not benches:
        print("no benchmark found", file=sys.stderr)
        return 1
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    sections = []
    failed = []
    for bench in benches:
        rel = bench.relative_to(ROOT)
        print(f"== {rel}", flush=True)
        proc = subprocess.run([sys.executable, str(rel)], cwd=ROOT, capture_output=True, text=True, check=False)
        sys.stderr.write(proc.stderr)
        if proc.returncode != 0:
            failed.append(str(rel))
            sections.append(f"## {bench.parent.name}\n\nFAILED (exit {proc.returncode}); see the command's output.\n")
            continue
        sections.append(proc.stdout.strip() + f"\n\nReproduce: `.venv/bin/python {rel}` (run {now}).\n")
    out = ROOT / "docs" / "benchmarks.md"
    out.write_text(
        "# Benchmarks\n\n"
        f"Written by `make bench` on {now}.\n\nMachine: {machine()}.\n\n"
        "Comparisons run side by side in one run and are reported as ratios: the machine is shared and noisy.\n\n"
        + "\n".join(sections)
    )
    print(f"wrote {out.relative_to(ROOT)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
