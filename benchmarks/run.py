"""Run the benchmarks under benchmarks/<name>/bench.py and write docs/benchmarks.md.

Usage: python benchmarks/run.py [--out FILE] [name ...] [-- ARGS]   (ARGS go to each benchmark run)

Each bench.py (`python -m benchmarks.<name>.bench`) prints its Markdown section on stdout; the
`<!-- bench: NAME -->` line in front of it finds it again. With names only those run and the other
sections stay; sections of benchmarks that no longer exist are dropped; a benchmark that fails keeps
its previous section, marked as not refreshed. Not tests: `make bench` runs them, never CI.
"""

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "benchmarks.md"
MARKER = re.compile(r"^<!-- bench: ([\w.-]+) -->$", re.M)
HEADER = (
    "# Benchmarks\n\n"
    "Written by `make bench` (every benchmark) or `python benchmarks/run.py NAME ...` (those only; the other "
    "sections stay as they were). Each section says when and on which machine it ran and the command that "
    "reproduces it.\n\n"
    "Comparisons run side by side in one run and are reported as ratios: the machine is shared and noisy.\n"
)


def machine() -> str:
    cpu = re.search(r"^model name\s*: (.*)$", Path("/proc/cpuinfo").read_text(), re.M)
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{os.cpu_count()} cores ({cpu.group(1).strip() if cpu else 'unknown CPU'}), {mem_gib:.0f} GiB, "
            f"{platform.platform()}, Python {platform.python_version()}")


def read_sections(text: str, names: set[str]) -> dict[str, str]:
    """The sections of an existing docs/benchmarks.md by benchmark name, each from its marker on."""
    parts = MARKER.split(text)[1:]  # name, its section, name, ...
    return {name: body.strip() + "\n" for name, body in zip(parts[::2], parts[1::2], strict=True) if name in names}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="benchmarks to run (default: every one)")
    ap.add_argument("--out", type=Path, default=OUT, help="the Markdown file to update (default: %(default)s)")
    cut = argv.index("--") if "--" in argv else len(argv)
    args, passed = ap.parse_args(argv[:cut]), argv[cut + 1:]
    every = {p.parent.name: p for p in (ROOT / "benchmarks").glob("*/bench.py")}
    unknown = sorted(set(args.names) - set(every))
    if unknown:
        print(f"no benchmark named {', '.join(unknown)} (there are: {', '.join(sorted(every))})", file=sys.stderr)
        return 1
    chosen = sorted(args.names or every)
    out = args.out.resolve()
    sections = read_sections(out.read_text(), set(every)) if out.exists() else {}
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    failed = []
    for name in chosen:
        rel = every[name].relative_to(ROOT)
        command = ["-m", f"benchmarks.{name}.bench", *passed]
        print(f"== {rel}", flush=True)
        # the benchmark's log (stderr) goes straight through, as it runs
        proc = subprocess.run([sys.executable, *command], cwd=ROOT, stdout=subprocess.PIPE, text=True, check=False)
        if proc.returncode != 0:
            failed.append(str(rel))
            note = f"The run of {now} FAILED (exit {proc.returncode}); see that command's output."
            if name in sections:
                previous = re.sub(r"\AThe run of [^\n]* FAILED [^\n]*\n\n", "", sections[name])
                sections[name] = f"{note} The section below is from the run before.\n\n{previous}"
            else:
                sections[name] = f"## {name}\n\n{note}\n"
            continue
        reproduce = f"`.venv/bin/python {' '.join(command)}` (run {now}; machine: {machine()})"
        sections[name] = proc.stdout.strip() + f"\n\nReproduce: {reproduce}.\n"
    out.write_text(HEADER + "".join(f"\n<!-- bench: {n} -->\n{sections[n]}" for n in sorted(sections)))
    print(f"wrote {out} (ran: {', '.join(chosen)}; kept: {', '.join(sorted(set(sections) - set(chosen))) or 'none'})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
