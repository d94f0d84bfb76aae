"""LiteRT server: latency and throughput against the in-process interpreter and MLServer (.lab/bench-venv)."""

import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from ai_edge_litert.interpreter import Interpreter
from edgeai_lab.litert import ServerProcess, litert_process
from edgeai_lab.load import http_load
from litert_server.testmodels import make_triton_model
from webhook_receiver.testing import free_port, http_json

from benchmarks import ROOT, harness
from benchmarks.harness import goal, loadavg, logger, pct, table, workdir

BENCH_VENV = ROOT / ".lab" / "bench-venv"
MODELS = {
    # name: (kind, KServe datatype, numpy dtype, input values, expected output)
    "float_model": ("float", "FP32", np.float32, [1.0, 2.0, 3.0, 4.0], [3.0, 5.0, 7.0, 9.0]),  # y = 2x + 1
    "uint8_model": ("uint8", "UINT8", np.uint8, [10, 20, 30, 40], [12, 22, 32, 42]),  # q_out = q_in + 2
}
CONCURRENCY, WARMUP, CAP_S = (1, 8), 300, 20.0  # warm-up requests per model, time cap of one run
LABEL = {"inproc": "in-process interpreter", "ours": "**litert-server**", "mls_default": "MLServer 1.7.1, defaults",
         "mls_tuned": "MLServer 1.7.1, tuned"}
log = logger("litert")


def start_mlserver(label: str, repo: Path, work: Path, tuned: bool) -> ServerProcess:
    root = work / label
    for name in MODELS:
        (root / name).mkdir(parents=True)
        shutil.copy(repo / name / "1" / "model.tflite", root / name / "model.tflite")
        (root / name / "model-settings.json").write_text(json.dumps({
            "name": name, "implementation": "mlserver_runtime.LiteRTRuntime", "parameters": {"uri": "./model.tflite"}}))
    port = free_port()
    settings = {"host": "127.0.0.1", "http_port": port, "grpc_port": free_port(), "metrics_port": free_port(),
                "metrics_dir": str(root / ".metrics"), "environments_dir": str(root / ".envs"),
                "load_models_at_startup": True, **({"parallel_workers": 0, "debug": False} if tuned else {})}
    (root / "settings.json").write_text(json.dumps(settings))
    return ServerProcess(label, [str(BENCH_VENV / "bin" / "mlserver"), "start", str(root)], work / f"{label}.log", port,
                         env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent)), cwd=work)


def wait_ready(server: ServerProcess) -> None:
    """Ready with every model loaded, and each model's right answer once."""
    server.wait_ready(("/v2/health/ready", *(f"/v2/models/{m}/ready" for m in MODELS)))
    for name in MODELS:
        status, answer = http_json("POST", f"{server.url}/v2/models/{name}/infer", body=request_body(name))
        out = np.array(answer["outputs"][0]["data"], dtype=np.float64).ravel().tolist() if status == 200 else answer
        if out != [float(v) for v in MODELS[name][4]]:
            raise RuntimeError(f"{server.label} model {name}: HTTP {status}, answer {out}")


def request_body(name: str) -> bytes:
    _, datatype, _, values, _ = MODELS[name]
    return json.dumps({"inputs": [{"name": "x", "datatype": datatype, "shape": [1, 4], "data": values}]}).encode()


def served_load(server: ServerProcess, name: str, concurrency: int, total: int) -> dict[str, Any]:
    body, pids = request_body(name), harness.proc_tree(server.proc.pid)
    server0, client0 = harness.cpu_s(pids), time.process_time()
    r = http_load(server.port, f"/v2/models/{name}/infer", lambda _k: body, total, concurrency, CAP_S)
    return dict(r, errors=len(r["failed"]), server_cpu=harness.cpu_s(pids) - server0,
                client_cpu=time.process_time() - client0)


def inprocess_load(model_path: Path, name: str, concurrency: int, total: int) -> dict[str, Any]:
    """The interpreter itself, one a thread, all starting together once every one is ready: the limit."""
    _, _, dtype, values, expected = MODELS[name]
    x, lat, answers, ready = np.array([values], dtype=dtype), [], [], threading.Barrier(concurrency + 1)

    def worker(count: int) -> None:
        interp, answer = Interpreter(model_path=str(model_path), num_threads=1), None
        interp.allocate_tensors()
        idx_in, idx_out = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]
        ready.wait()
        deadline = time.monotonic() + CAP_S
        for _ in range(count):
            if time.monotonic() > deadline:
                break
            t = time.perf_counter()
            interp.set_tensor(idx_in, x)
            interp.invoke()
            answer = interp.get_tensor(idx_out)
            lat.append(time.perf_counter() - t)
        answers.append(answer.ravel().tolist() if answer is not None else expected)

    threads = [threading.Thread(target=worker, args=(total // concurrency + (i < total % concurrency),))
               for i in range(concurrency)]
    for t in threads:
        t.start()
    ready.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    if any(a != expected for a in answers):
        raise RuntimeError(f"in-process {name}: wrong answers {answers}")
    return {"lat": lat, "wall": time.perf_counter() - t0, "errors": 0, "capped": False, "server_cpu": 0.0,
            "client_cpu": 0.0}


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    lat, n = sorted(x for r in runs for x in r["lat"]), sum(len(r["lat"]) for r in runs)
    return {"n": n, "p50": pct(lat, 0.50) * 1e3, "p99": pct(lat, 0.99) * 1e3,
            "rps": n / sum(r["wall"] for r in runs), "errors": sum(r["errors"] for r in runs),
            "capped": not n or any(r["capped"] for r in runs),
            "server_us": sum(r["server_cpu"] for r in runs) / max(n, 1) * 1e6,
            "client_us": sum(r["client_cpu"] for r in runs) / max(n, 1) * 1e6}


def main(argv: list[str] | None = None) -> int:
    args = harness.arguments(__doc__, argv, requests=(500, "requests per configuration and round"),
                             rounds=(4, "rounds, interleaved to spread the machine's noise"))
    if not (BENCH_VENV / "bin" / "mlserver").exists():
        raise SystemExit(f"MLServer is not installed in {BENCH_VENV.relative_to(ROOT)}: `make bench` installs it "
                         "(benchmarks/litert/requirements-mlserver.txt)")
    servers: dict[str, ServerProcess] = {}
    with workdir("litert") as work:
        repo = work / "models"
        for name, (kind, *_rest) in MODELS.items():
            make_triton_model(repo, name, 1, kind)
        try:
            servers["ours"] = litert_process(work, repo, "--load-model", "*")
            servers["mls_default"] = start_mlserver("mlserver-default", repo, work, tuned=False)
            servers["mls_tuned"] = start_mlserver("mlserver-tuned", repo, work, tuned=True)
            for server in servers.values():
                wait_ready(server)
            time.sleep(2.0)
            idle_rss = {k: harness.rss_mib(s.proc.pid) for k, s in servers.items()}
            for srv in servers.values():  # warm-up, not measured
                for name in MODELS:
                    served_load(srv, name, 8, WARMUP)
            targets, load_before = ["inproc", *servers], loadavg()
            results: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
            for rnd in range(args.rounds):
                order = targets if rnd % 2 == 0 else targets[:1] + targets[:0:-1]
                for name in MODELS:
                    for conc in CONCURRENCY:
                        for key in order:
                            r = inprocess_load(repo / name / "1" / "model.tflite", name, conc, args.requests) \
                                if key == "inproc" else served_load(servers[key], name, conc, args.requests)
                            results.setdefault((key, name, conc), []).append(r)
                            log(f"round {rnd + 1} {key} {name} c={conc}: {len(r['lat'])} ok, {r['errors']} errors, "
                                f"{r['wall']:.2f} s")
        finally:
            for srv in servers.values():
                srv.stop()
    print(report({k: summarize(v) for k, v in results.items()}, targets, idle_rss, args, load_before))
    return 0


def report(stats: dict, targets: list[str], idle_rss: dict[str, float], args: Any, load: str) -> str:
    intro = f"""Small test models (1x4 FP32 `y = 2x + 1`, 1x4 uint8 quantized ADD) at concurrency 1 and 8: the same
        LiteRT interpreter (ai-edge-litert, 1 thread) in-process (the limit), behind our server (defaults: 2
        interpreters per model) and behind MLServer with a custom runtime (`benchmarks/litert/mlserver_runtime.py`;
        defaults = 1 parallel worker and access log; tuned = `parallel_workers: 0`, `debug: false`). Client: one
        keep-alive `http.client` connection per thread, KServe v2 JSON; {args.requests * args.rounds} requests per
        configuration in {args.rounds} interleaved rounds of {args.requests} (server order alternating), latencies
        pooled, after {WARMUP} warm-up requests per model. All on the machine's {os.cpu_count()} shared cores (1-minute
        load average {load} before, {loadavg()} after). Server CPU = user + system CPU of the server's processes per
        request (/proc/<pid>/stat)."""
    rows = []
    for name in MODELS:
        for conc in CONCURRENCY:
            base, ours = stats[("inproc", name, conc)], stats[("ours", name, conc)]
            for key in targets:
                s = stats[(key, name, conc)]
                ratio = f"{ours['rps'] / s['rps']:.3f}x" if key == "inproc" else \
                    "" if key == "ours" or not s["rps"] else f"{ours['rps'] / s['rps']:.2f}x"
                rows.append((name, conc, LABEL[key], f"{s['p50']:.3f}", f"{s['p99']:.3f}",
                             f"{s['rps']:,.0f}" + (" (time cap hit)" if s["capped"] else ""), s["errors"],
                             "" if key == "inproc" else f"{s['server_us']:,.0f}",
                             "" if key == "inproc" else f"{s['p50'] - base['p50']:+.3f} ms", ratio))
    mem = ", ".join(f"{LABEL[k].strip('*')} {v:.0f} MiB" for k, v in idle_rss.items())
    client = [stats[("ours", n, c)]["client_us"] for n in MODELS for c in CONCURRENCY]
    out = ["## LiteRT server: latency and throughput", "", *harness.paragraphs(intro), "", *table(
        ["model", "conc.", "serving", "p50 ms", "p99 ms", "req/s", "errors", "server CPU µs/req",
         "p50 overhead vs in-process", "req/s ours / this"], rows, "lrlrrrrrrr"),
           "", f"Idle memory (VmRSS after loading both models, MLServer with its worker processes): {mem}.",
           f"The load generator itself used {min(client):,.0f}-{max(client):,.0f} µs of CPU per request against "
           "our server (Python http.client + JSON), on the same cores.", ""]
    for conc in CONCURRENCY:
        over = {n: stats[("ours", n, conc)]["p50"] - stats[("inproc", n, conc)]["p50"] for n in MODELS}
        met = all(o < 0.5 for o in over.values())
        detail = "; ".join(f"{n}: {o:.3f} ms" for n, o in over.items())
        if not met:
            detail += f"; worst {max(over.values()) - 0.5:.3f} ms over the goal"
            if conc > 1:
                little = "; ".join(f"{n}: {conc} / {stats[('ours', n, conc)]['rps']:,.0f} req/s = "
                                   f"{conc / stats[('ours', n, conc)]['rps'] * 1e3:.2f} ms" for n in MODELS)
                detail += (f". With {conc} requests in flight on {os.cpu_count()} cores it is mostly queueing: by "
                           f"Little's law the mean latency is concurrency / throughput ({little}), so under 0.5 ms "
                           f"needs more than {conc / 0.5e-3:,.0f} req/s")
        out.append("- " + goal(f"p50 overhead over in-process < 0.5 ms, concurrency {conc}", met, detail))
    for conc in CONCURRENCY:
        best = {n: max(("mls_default", "mls_tuned"), key=lambda k, n=n: stats[(k, n, conc)]["rps"]) for n in MODELS}
        vs = {n: stats[("ours", n, conc)]["rps"] / stats[(best[n], n, conc)]["rps"] for n in MODELS}
        detail = "; ".join(f"{n}: {r:.2f}x vs {LABEL[best[n]]}" for n, r in vs.items())
        if min(vs.values()) < 2.0:
            detail += f"; worst {min(vs.values()):.2f}x, {2.0 / min(vs.values()):.2f}x short of the goal"
        cpu = "; ".join(f"{n}: {stats[(best[n], n, conc)]['server_us'] / stats[('ours', n, conc)]['server_us']:.1f}x"
                        for n in MODELS)
        out.append("- " + goal(f"throughput >= 2x MLServer's (its faster configuration), concurrency {conc}",
                               min(vs.values()) >= 2.0, detail)
                   + f" Server CPU per request, that MLServer over ours: {cpu}.")
    return "\n".join(out)


if __name__ == "__main__":
    raise SystemExit(main())
