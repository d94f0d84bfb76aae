#!/usr/bin/env python3
# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""LiteRT server: latency and throughput against the in-process interpreter and MLServer.

For a small FP32 model and a small uint8 model (litert_server.testmodels, shape 1x4), at
concurrency 1 and 8, it measures:

- in-process: the same LiteRT interpreter (ai-edge-litert, 1 thread) called directly,
  set_tensor + invoke + get_tensor, one interpreter per client thread (the physical limit);
- our LiteRT server (images/litert-server, defaults: 2 interpreters per model, 1 thread each,
  metrics on) as a subprocess on a free loopback port;
- MLServer serving the same model with the same interpreter through a custom runtime
  (benchmarks/litert/mlserver_runtime.py), from its own venv (.lab/bench-venv), twice:
  with its defaults (1 parallel inference worker, access log) and tuned (no parallel
  workers, no access log). The goals are judged against the faster of the two.

The load generator keeps one keep-alive http.client connection per thread and sends KServe
v2 JSON infer requests; a fixed count per configuration (--requests), a warm-up first, a time
cap per run. Each configuration runs --rounds times, the servers' order alternating; latencies
of all rounds are pooled and throughput is completed requests over the summed wall time.
Idle memory is VmRSS of the server process (plus its children, for MLServer's workers),
after loading and before any load, from /proc/<pid>/status.

    .venv/bin/python benchmarks/litert/bench.py [--requests 2000] [--rounds 2]

Prints a Markdown section on stdout (benchmarks/run.py collects it into docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "images" / "litert-server" / "src"))

from ai_edge_litert.interpreter import Interpreter
from litert_server.testmodels import make_triton_model

BENCH_VENV = ROOT / ".lab" / "bench-venv"
MODELS = {
    # name: (kind, KServe datatype, numpy dtype, input values, expected output)
    "float_model": ("float", "FP32", np.float32, [1.0, 2.0, 3.0, 4.0], [3.0, 5.0, 7.0, 9.0]),  # y = 2x + 1
    "uint8_model": ("uint8", "UINT8", np.uint8, [10, 20, 30, 40], [12, 22, 32, 42]),  # q_out = q_in + 2
}
CONCURRENCY = (1, 8)


def log(msg: str) -> None:
    sys.stderr.write(f"[litert bench] {msg}\n")
    sys.stderr.flush()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(sorted_xs: list[float], p: float) -> float:
    return sorted_xs[min(len(sorted_xs) - 1, int(p * len(sorted_xs)))]


def tree(pid: int) -> list[int]:
    """pid and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def rss_kib(pid: int) -> int:
    """VmRSS of pid plus all its descendants, in KiB."""
    total = 0
    for p in tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds of these processes."""
    total = 0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


# --- servers -------------------------------------------------------------------------------
class Server:
    def __init__(self, label: str, args: list[str], env: dict[str, str], cwd: Path, port: int, logfile: Path) -> None:
        self.label, self.port, self.logfile = label, port, logfile
        with logfile.open("wb") as out:
            self.proc = subprocess.Popen(
                args, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_ready(self, models: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = ["/v2/health/ready"] + [f"/v2/models/{m}/ready" for m in models]
        while pending:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self.proc.returncode}; log: {self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.label} not ready after {timeout:.0f} s; log: {self.tail()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", pending[0])
                status = conn.getresponse().status
                conn.close()
            except OSError:
                status = 0
            if status == 200:
                pending.pop(0)
            else:
                time.sleep(0.2)

    def tail(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-1500:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            # the server's own process group (start_new_session), so MLServer's workers go too
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


def start_ours(repo: Path, work: Path) -> Server:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT / "images" / "litert-server" / "src"))
    env = {k: v for k, v in env.items() if not k.startswith("EDGEAI_LITERT_")}
    args = [
        sys.executable,
        "-m",
        "litert_server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--metrics-port",
        str(free_port()),
        "--model-repository",
        str(repo),
        "--load-model",
        "*",
    ]
    return Server("litert-server", args, env, work, port, work / "litert-server.log")


def start_mlserver(label: str, repo: Path, work: Path, tuned: bool) -> Server:
    root = work / label
    root.mkdir()
    for name in MODELS:
        mdir = root / name
        mdir.mkdir()
        shutil.copy(repo / name / "1" / "model.tflite", mdir / "model.tflite")
        (mdir / "model-settings.json").write_text(
            json.dumps(
                {
                    "name": name,
                    "implementation": "mlserver_runtime.LiteRTRuntime",
                    "parameters": {"uri": "./model.tflite"},
                }
            )
        )
    port = free_port()
    settings: dict[str, Any] = {
        "host": "127.0.0.1",
        "http_port": port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        "metrics_dir": str(root / ".metrics"),
        "environments_dir": str(root / ".envs"),
        "load_models_at_startup": True,
    }
    if tuned:
        settings.update(parallel_workers=0, debug=False)
    (root / "settings.json").write_text(json.dumps(settings))
    env = dict(os.environ, PYTHONPATH=str(HERE))
    args = [str(BENCH_VENV / "bin" / "mlserver"), "start", str(root)]
    return Server(label, args, env, root, port, work / f"{label}.log")


# --- load ----------------------------------------------------------------------------------
def request_body(name: str) -> bytes:
    _, datatype, _, values, _ = MODELS[name]
    return json.dumps({"inputs": [{"name": "x", "datatype": datatype, "shape": [1, 4], "data": values}]}).encode()


def check_answer(port: int, name: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", f"/v2/models/{name}/infer", request_body(name), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    raw = resp.read()
    conn.close()
    if resp.status != 200:
        raise RuntimeError(f"port {port} model {name}: HTTP {resp.status}: {raw[:300]!r}")
    out = json.loads(raw)["outputs"][0]
    data = np.array(out["data"], dtype=np.float64).ravel().tolist()
    if data != [float(v) for v in MODELS[name][4]]:
        raise RuntimeError(f"port {port} model {name}: wrong answer {data}")


def http_load(port: int, name: str, concurrency: int, total: int, cap_s: float, pid: int = 0) -> dict[str, Any]:
    body = request_body(name)
    path = f"/v2/models/{name}/infer"
    headers = {"Content-Type": "application/json"}
    per_thread = [total // concurrency + (1 if i < total % concurrency else 0) for i in range(concurrency)]
    lats: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    start = threading.Barrier(concurrency + 1)
    deadline = [0.0]

    def worker(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        out = lats[i]
        start.wait()
        for _ in range(per_thread[i]):
            if time.monotonic() > deadline[0]:
                break
            t = time.perf_counter()
            try:
                conn.request("POST", path, body, headers)
                resp = conn.getresponse()
                resp.read()
                ok = resp.status == 200
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                ok = False
            if ok:
                out.append(time.perf_counter() - t)
            else:
                errors[i] += 1
        conn.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    pids = tree(pid) if pid else []
    server_cpu0, client_cpu0 = cpu_s(pids), time.process_time()
    deadline[0] = time.monotonic() + cap_s
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {
        "lat": [x for xs in lats for x in xs],
        "wall": wall,
        "errors": sum(errors),
        "capped": sum(len(x) for x in lats) + sum(errors) < total,
        "server_cpu": cpu_s(pids) - server_cpu0,
        "client_cpu": time.process_time() - client_cpu0,
    }


def inprocess_load(model_path: Path, name: str, concurrency: int, total: int, cap_s: float) -> dict[str, Any]:
    _, _, dtype, values, expected = MODELS[name]
    x = np.array([values], dtype=dtype)
    interps = []
    for _ in range(concurrency):
        it = Interpreter(model_path=str(model_path), num_threads=1)
        it.allocate_tensors()
        interps.append((it, it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]))
    it, i_in, i_out = interps[0]
    it.set_tensor(i_in, x)
    it.invoke()
    if it.get_tensor(i_out).ravel().tolist() != expected:
        raise RuntimeError(f"in-process {name}: wrong answer {it.get_tensor(i_out)}")
    per_thread = [total // concurrency + (1 if i < total % concurrency else 0) for i in range(concurrency)]
    lats: list[list[float]] = [[] for _ in range(concurrency)]
    start = threading.Barrier(concurrency + 1)
    deadline = [0.0]

    def worker(i: int) -> None:
        interp, idx_in, idx_out = interps[i]
        out = lats[i]
        start.wait()
        for _ in range(per_thread[i]):
            if time.monotonic() > deadline[0]:
                break
            t = time.perf_counter()
            interp.set_tensor(idx_in, x)
            interp.invoke()
            interp.get_tensor(idx_out)
            out.append(time.perf_counter() - t)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    deadline[0] = time.monotonic() + cap_s
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {
        "lat": [x for xs in lats for x in xs],
        "wall": wall,
        "errors": 0,
        "capped": False,
        "server_cpu": 0.0,
        "client_cpu": 0.0,
    }


# --- report --------------------------------------------------------------------------------
def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    lat = sorted(x for r in runs for x in r["lat"])
    wall = sum(r["wall"] for r in runs)
    if not lat:
        return {
            "n": 0,
            "p50": float("nan"),
            "p99": float("nan"),
            "rps": 0.0,
            "errors": sum(r["errors"] for r in runs),
            "capped": True,
        }
    n = len(lat)
    return {
        "n": n,
        "p50": pct(lat, 0.50) * 1e3,
        "p99": pct(lat, 0.99) * 1e3,
        "rps": n / wall,
        "errors": sum(r["errors"] for r in runs),
        "capped": any(r["capped"] for r in runs),
        "server_us": sum(r["server_cpu"] for r in runs) / n * 1e6,
        "client_us": sum(r["client_cpu"] for r in runs) / n * 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=500, help="requests per configuration and round")
    ap.add_argument("--rounds", type=int, default=4, help="rounds, interleaved to spread the machine's noise")
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--cap-s", type=float, default=20.0, help="time cap of one measured run")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="edgeai-litert-bench-"))
    repo = work / "models"
    for name, (kind, *_rest) in MODELS.items():
        make_triton_model(repo, name, 1, kind)
    servers: dict[str, Server] = {}
    mlserver_problem = ""
    try:
        servers["ours"] = start_ours(repo, work)
        if not (BENCH_VENV / "bin" / "mlserver").exists():
            mlserver_problem = (
                f"MLServer is not installed in {BENCH_VENV.relative_to(ROOT)} (`python3.11 -m venv "
                ".lab/bench-venv && .lab/bench-venv/bin/pip install -r "
                "benchmarks/litert/requirements-mlserver.txt`)"
            )
        else:
            servers["mls_default"] = start_mlserver("mlserver-default", repo, work, tuned=False)
            servers["mls_tuned"] = start_mlserver("mlserver-tuned", repo, work, tuned=True)
        for key in list(servers):
            try:
                servers[key].wait_ready(list(MODELS), 90)
                for name in MODELS:
                    check_answer(servers[key].port, name)
            except RuntimeError as exc:
                if key == "ours":
                    raise
                log(f"{servers[key].label}: {exc}")
                lines = [ln for ln in str(exc).splitlines() if ln.strip()]
                last = [ln for ln in lines if "Error" in ln][-1:] or lines[-1:] or [""]
                mlserver_problem += (
                    f"{servers[key].label} did not start or answer correctly "
                    f"(last log line: `{last[0].strip()[:200]}`). "
                )
                servers.pop(key).stop()
        time.sleep(2.0)
        idle_rss = {k: rss_kib(s.proc.pid) for k, s in servers.items()}
        for srv in servers.values():  # warm-up, not measured
            for name in MODELS:
                http_load(srv.port, name, 8, args.warmup, args.cap_s)

        targets = ["inproc"] + list(servers)
        load_before = loadavg()
        results: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
        for rnd in range(args.rounds):
            order = targets if rnd % 2 == 0 else targets[:1] + targets[:0:-1]
            for name in MODELS:
                for conc in CONCURRENCY:
                    for key in order:
                        if key == "inproc":
                            r = inprocess_load(
                                repo / name / "1" / "model.tflite", name, conc, args.requests, args.cap_s
                            )
                        else:
                            r = http_load(
                                servers[key].port, name, conc, args.requests, args.cap_s, servers[key].proc.pid
                            )
                        results.setdefault((key, name, conc), []).append(r)
                        log(
                            f"round {rnd + 1} {key} {name} c={conc}: {len(r['lat'])} ok, "
                            f"{r['errors']} errors, {r['wall']:.2f} s"
                        )
        load_after = loadavg()
    finally:
        for srv in servers.values():
            srv.stop()
        shutil.rmtree(work, ignore_errors=True)

    label = {
        "inproc": "in-process interpreter",
        "ours": "**litert-server**",
        "mls_default": "MLServer 1.7.1, defaults",
        "mls_tuned": "MLServer 1.7.1, tuned",
    }
    stats = {k: summarize(v) for k, v in results.items()}
    mls_keys = [k for k in ("mls_default", "mls_tuned") if k in servers]
    out = [
        "## LiteRT server: latency and throughput",
        "",
        f"Small test models (1x4 FP32 `y = 2x + 1`, 1x4 uint8 quantized ADD) at concurrency 1 and 8: the same "
        f"LiteRT interpreter (ai-edge-litert, 1 thread) called in-process (the limit), behind our server "
        f"(defaults: 2 interpreters per model) and behind MLServer with a custom runtime "
        f"(`benchmarks/litert/mlserver_runtime.py`; defaults = 1 parallel worker and access log; tuned = "
        f"`parallel_workers: 0`, `debug: false`). Client: one keep-alive `http.client` connection per thread, "
        f"KServe v2 JSON; {args.requests * args.rounds} requests per configuration in {args.rounds} interleaved "
        f"rounds of {args.requests} (server order alternating), latencies pooled; {args.warmup} warm-up "
        f"requests per model first. "
        f"Client and servers share the machine's {os.cpu_count()} cores (1-minute load average "
        f"{load_before} before, {load_after} after: other work ran too). Server CPU = user + system CPU of the "
        f"server's processes per request (/proc/<pid>/stat).",
        "",
    ]
    if mlserver_problem:
        out += [f"MLServer: not measured: {mlserver_problem}", ""]
    out += [
        "| model | conc. | serving | p50 ms | p99 ms | req/s | errors | server CPU µs/req "
        "| p50 overhead vs in-process | req/s ours / this |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    verdict_overhead: list[tuple[str, int, float]] = []
    verdict_tput: list[tuple[str, int, float, str, float]] = []
    for name in MODELS:
        for conc in CONCURRENCY:
            base = stats[("inproc", name, conc)]
            ours = stats[("ours", name, conc)]
            for key in targets:
                s = stats[(key, name, conc)]
                over = "" if key == "inproc" else f"{s['p50'] - base['p50']:+.3f} ms"
                ratio = "" if key in ("inproc", "ours") or not s["rps"] else f"{ours['rps'] / s['rps']:.2f}x"
                if key == "inproc":
                    ratio = f"{ours['rps'] / s['rps']:.3f}x"
                capped = " (time cap hit)" if s["capped"] else ""
                cpu = "" if key == "inproc" else f"{s['server_us']:,.0f}"
                out.append(
                    f"| {name} | {conc} | {label[key]} | {s['p50']:.3f} | {s['p99']:.3f} | "
                    f"{s['rps']:,.0f}{capped} | {s['errors']} | {cpu} | {over} | {ratio} |"
                )
            verdict_overhead.append((name, conc, ours["p50"] - base["p50"]))
            if mls_keys:
                best = max(mls_keys, key=lambda k: stats[(k, name, conc)]["rps"])
                verdict_tput.append(
                    (
                        name,
                        conc,
                        ours["rps"] / stats[(best, name, conc)]["rps"],
                        label[best],
                        stats[(best, name, conc)]["server_us"] / ours["server_us"],
                    )
                )
    out.append("")
    mem = ", ".join(f"{label[k].strip('*')} {v / 1024:.0f} MiB" for k, v in idle_rss.items())
    out.append(f"Idle memory (VmRSS after loading both models, MLServer with its worker processes): {mem}.")
    client = [stats[("ours", n, c)]["client_us"] for n in MODELS for c in CONCURRENCY]
    out.append(
        f"The load generator itself used {min(client):,.0f}-{max(client):,.0f} µs of CPU per request "
        f"against our server (Python http.client + JSON), on the same cores."
    )
    out.append("")
    for conc in CONCURRENCY:
        rows = [v for v in verdict_overhead if v[1] == conc]
        met = all(v[2] < 0.5 for v in rows)
        detail = "; ".join(f"{n}: {o:.3f} ms" for n, _c, o in rows)
        verdict = "met" if met else "missed"
        line = f"- Goal p50 overhead over in-process < 0.5 ms, concurrency {conc}: **{verdict}** ({detail}"
        if not met:
            worst = max(rows, key=lambda v: v[2])
            line += f"; worst {worst[2] - 0.5:.3f} ms over the goal"
            if conc > 1:
                little = "; ".join(
                    f"{n}: {conc} / {stats[('ours', n, conc)]['rps']:,.0f} req/s = "
                    f"{conc / stats[('ours', n, conc)]['rps'] * 1e3:.2f} ms"
                    for n, _c, _o in rows
                )
                line += (
                    f". With {conc} requests in flight on {os.cpu_count()} cores the latency is mostly queueing: "
                    f"by Little's law the mean latency is concurrency / throughput ({little}), so a p50 "
                    f"overhead under 0.5 ms at this concurrency needs more than {conc / 0.5e-3:,.0f} req/s"
                )
        out.append(line + ").")
    if verdict_tput:
        for conc in CONCURRENCY:
            rows = [v for v in verdict_tput if v[1] == conc]
            met = all(v[2] >= 2.0 for v in rows)
            detail = "; ".join(f"{n}: {r:.2f}x vs {m}" for n, _c, r, m, _cpu in rows)
            line = (
                f"- Goal throughput >= 2x MLServer's (its faster configuration), concurrency {conc}: "
                f"**{'met' if met else 'missed'}** ({detail}"
            )
            if not met:
                worst = min(rows, key=lambda v: v[2])
                line += f"; worst {worst[2]:.2f}x, {2.0 / worst[2]:.2f}x short of the goal"
            cpu = "; ".join(f"{n}: {c:.1f}x" for n, _c, _r, _m, c in rows)
            line += f"). Server CPU per request, that MLServer over ours: {cpu}."
            out.append(line)
    else:
        out.append("- Goal throughput >= 2x MLServer's: **not measured** (MLServer unavailable, see above).")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
