#!/usr/bin/env python3
"""Routing-quality benchmark: kubeinfer's strategies vs vllm-router's policies
over 8 simulated vLLM workers with the KV-cache model.

One command, loopback only, bounded in requests and time (about 35 minutes
on 2 cores; ``--quick`` about 5; ``--repeat N`` N times as long):

    .venv/bin/python bench/routing/run.py   # vllm-router: bench/router/run.py --install

Every run starts 8 fresh `kubeinfer.worker.simulated` processes (empty
caches), one router (or two kubeinfer routers for ``... x2``, requests
alternating),
and drives a streaming chat workload open loop at a fixed rate. Figures
count requests sent after a warm-up. Cache hit rate and load spread come
from the workers' own /metrics (vllm:prefix_cache_hits/queries,
vllm:request_success).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import workload as wl  # noqa: E402

_spec = importlib.util.spec_from_file_location("router_bench", HERE.parent / "router" / "run.py")
assert _spec is not None
assert _spec.loader is not None
rb = importlib.util.module_from_spec(_spec)
sys.modules["router_bench"] = rb  # its dataclasses look their module up
_spec.loader.exec_module(rb)

WORKERS = 8
MODEL = {"name": "tiny", "source": "sim/tiny", "engineArgs": {"maxModelLen": 8192}}
# One simulated GPU (docs/benchmarks.md#routing-quality says why each figure):
# prefill 300 us per uncached token, one prefill at a time (compute-bound;
# ~3,300 tokens/s, an A10G-class GPU with a 7B model); decode 30 ms per token
# plus 2 ms per other running sequence (memory-bound: each sequence's KV is
# read every step); 1,500 blocks of 16 tokens (24,000 tokens) of KV cache,
# which, not the 64 batch slots, limits how many requests run.
SIMULATOR = {"ttftMs": 10, "prefillUsPerToken": 300, "prefillSerial": True, "tpotMs": 30,
             "tpotUsPerRunningSeq": 2000, "maxNumSeqs": 64, "kvCacheBlocks": 1500,
             "kvBlockSize": 16}
KUBEINFER = ("round-robin", "least-loaded", "prefix-affinity", "prefix-score")
VLLM_ROUTER = ("cache_aware", "consistent_hash", "power_of_two")


class Workers:
    def __init__(self, n: int, workdir: Path) -> None:
        self.ports = [rb.free_port() for _ in range(n)]
        self.procs = []
        for p in self.ports:
            argv = [sys.executable, "-P", "-m", "kubeinfer.worker.simulated", "--model-spec",
                    json.dumps(MODEL), "--simulator-spec", json.dumps(SIMULATOR),
                    "--port", str(p)]
            self.procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                               stderr=(workdir / f"worker-{p}.log").open("ab")))
        try:
            for u in self.urls:
                rb.wait_until(lambda u=u: rb.http_ok(u + "/health"), 120, f"worker {u}")
        except BaseException:
            self.stop()
            raise

    @property
    def urls(self) -> list[str]:
        return [f"http://{rb.HOST}:{p}" for p in self.ports]

    def counters(self) -> list[dict[str, float]]:
        out = []
        for u in self.urls:
            with urllib.request.urlopen(u + "/metrics", timeout=5) as r:
                out.append(wl.parse_counters(r.read().decode()))
        return out

    def stop(self) -> None:
        stop_all(self.procs)


def stop_all(procs: list[Any]) -> None:
    """SIGTERM, then SIGKILL what has not exited after 20 s (a busy machine)."""
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


LOAD_FACTOR: dict[str, float | None] = {"value": None}  # --load-factor; None: the default


def start_kubeinfer(strategy: str, backends: list[str], workdir: Path, tag: str) -> Any:
    port = rb.free_port()
    routes = workdir / f"routes-{tag}.json"
    routes.write_text(json.dumps({
        "service": "bench", "model": "tiny", "strategy": strategy, "queueSize": 4096,
        **({"loadFactor": LOAD_FACTOR["value"]} if LOAD_FACTOR["value"] else {}),
        "backends": [{"name": f"w{i}", "url": u, "revision": "r1"}
                     for i, u in enumerate(backends)],
    }))
    argv = [str(rb.VENV_BIN / "kubeinfer-router"), "--config", str(routes), "--host", rb.HOST,
            "--port", str(port), "--scrape-interval", "0.5"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                            stderr=(workdir / f"kubeinfer-{tag}.log").open("ab"))
    url = f"http://{rb.HOST}:{port}"
    rb.wait_until(lambda: rb.http_ok(url + "/readyz"), 30, "kubeinfer-router")
    return proc, url


def start_vllm_router(policy: str, backends: list[str], workdir: Path) -> Any:
    port, prom = rb.free_port(), rb.free_port()
    argv = [str(rb.VLLM_ROUTER_VENV / "bin" / "vllm-router"), "--host", rb.HOST, "--port",
            str(port), "--worker-urls", *backends, "--policy", policy, "--prometheus-port",
            str(prom), "--log-level", "warning"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                            stderr=(workdir / f"vllm-router-{policy}.log").open("ab"))
    url = f"http://{rb.HOST}:{port}"
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    rb.wait_until(lambda: rb.http_ok(url + "/v1/chat/completions", body), 60, "vllm-router")
    return proc, url


def measure(target: str, kind: str, rate: float, seconds: float, warmup: float,
            workdir: Path, seed: int = 1) -> dict[str, Any]:
    workers = Workers(WORKERS, workdir)
    procs = []
    try:
        if target.startswith("vllm-router:"):
            proc, url = start_vllm_router(target.split(":", 1)[1], workers.urls, workdir)
            procs, urls = [proc], [url]
        else:
            strategy, _, copies = target.partition(" x")
            started = [start_kubeinfer(strategy, workers.urls, workdir, f"{strategy}-{i}")
                       for i in range(int(copies or 1))]
            procs, urls = [p for p, _ in started], [u for _, u in started]
        # Counters from the end of the warm-up: caches start empty, and a
        # cold start is not what routing is judged on.
        warm: list[list[dict[str, float]]] = []
        load = wl.Workload(kind, seed=seed)
        results, wall = asyncio.run(wl.drive(urls, "tiny", load, rate, seconds, warmup=warmup,
                                             on_warm=lambda: warm.append(workers.counters())))
        after = workers.counters()
        before = warm[0] if warm else after
    finally:
        stop_all(procs)
        workers.stop()
    out = wl.summarize(results, wall, warmup, seconds)
    q = sum(a["vllm:prefix_cache_queries_total"] - b["vllm:prefix_cache_queries_total"]
            for a, b in zip(after, before, strict=True))
    h = sum(a["vllm:prefix_cache_hits_total"] - b["vllm:prefix_cache_hits_total"]
            for a, b in zip(after, before, strict=True))
    per = [a["vllm:request_success_total"] - b["vllm:request_success_total"]
           for a, b in zip(after, before, strict=True)]
    out["hit_rate"] = h / q if q else None
    out["hits"], out["queries"] = h, q
    out["per_worker"] = [
        {"requests": p, "hit_rate": (a["vllm:prefix_cache_hits_total"]
                                     - b["vllm:prefix_cache_hits_total"]) / dq if dq else None}
        for p, a, b, dq in zip(per, after, before,
                               [a["vllm:prefix_cache_queries_total"]
                                - b["vllm:prefix_cache_queries_total"]
                                for a, b in zip(after, before, strict=True)], strict=True)]
    out["spread"] = max(per) / (sum(per) / len(per)) if sum(per) else None  # max / mean
    out.update(target=target, kind=kind, rate=rate, seed=seed)
    log_row(out)
    return out


QUIET = ("target", "kind", "rate", "per_worker", "ttfts", "hits", "queries", "ttft_p90_runs")


def log_row(out: dict[str, Any]) -> None:
    rb.log(f"{out['kind']} {out['target']} @ {out['rate']:g}/s: " + ", ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in out.items()
        if k not in QUIET))


def pooled(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from repeats of a target (``--repeat``, each with its own
    workload seed, the same seeds for every target): TTFT percentiles and
    the hit rate over every request of every repeat (a longer sample, not
    an average of per-run percentiles), rates and spread averaged. A single
    run's p90 over ~200 requests moves by 20 % between runs beyond
    saturation; ``ttft_p90_runs`` keeps each run's for the spread."""
    if len(runs) == 1:
        return runs[0]

    def mean(field: str) -> float | None:
        values = [r[field] for r in runs if r.get(field) is not None]
        return sum(values) / len(values) if values else None

    ttfts = [t for r in runs for t in r["ttfts"]]
    hits, queries = sum(r["hits"] for r in runs), sum(r["queries"] for r in runs)
    out = {k: runs[0][k] for k in ("target", "kind", "rate")}
    out.update(
        requests=sum(r["requests"] for r in runs),
        errors=sum(r["errors"] for r in runs),
        **{f: mean(f) for f in ("tok_s_load", "tok_s_drain", "output_tok_s", "itl_mean",
                                "spread")},
        ttft_p50=wl.percentile(ttfts, 0.5),
        ttft_p90=wl.percentile(ttfts, 0.9),
        ttft_p90_runs=[r["ttft_p90"] for r in runs],
        hit_rate=hits / queries if queries else None,
        repeats=len(runs),
    )
    return out


def _f(v: Any, fmt: str) -> str:
    return "-" if v is None else fmt.format(v)


def _runs(row: dict[str, Any]) -> str:
    """Each repeat's own p90, lowest to highest, after the pooled one."""
    runs = row.get("ttft_p90_runs")
    if not runs or None in runs:
        return ""
    return f" ({min(runs):.2f}-{max(runs):.2f})"


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| workload | rate/s | target | tok/s under load | tok/s with drain "
             "| TTFT p50 s | TTFT p90 s | ITL ms | hit rate | load max/mean | errors |",
             "|" + "---|" * 11]
    for r in rows:
        lines.append(
            f"| {r['kind']} | {r['rate']:g} | {r['target']} | {_f(r.get('tok_s_load'), '{:.0f}')}"
            f" | {_f(r.get('tok_s_drain'), '{:.0f}')}"
            f" | {_f(r.get('ttft_p50'), '{:.2f}')} | {_f(r.get('ttft_p90'), '{:.2f}')}{_runs(r)}"
            f" | {_f(r.get('itl_mean') and r['itl_mean'] * 1000, '{:.0f}')}"
            f" | {_f(r.get('hit_rate'), '{:.0%}')} | {_f(r.get('spread'), '{:.2f}')}"
            f" | {r.get('errors', '-')}/{r.get('requests', '-')} |")
    return "\n".join(lines)


BEST = "prefix-score"  # kubeinfer's strategy for shared prefixes (docs/router.md)


def ratios(rows: list[dict[str, Any]]) -> str:
    """The issue's targets as ratios within this run: the best strategy
    against round-robin and vllm-router's cache_aware on the shared workload
    (tokens/s under load: higher is better; TTFT p90: lower is better), and
    against least-loaded on the control workload."""
    def pick(kind: str, target: str, rate: float | None = None) -> dict[str, Any] | None:
        return next((r for r in rows if r["kind"] == kind and r["target"] == target
                     and (rate is None or r["rate"] == rate)), None)

    def ratio(a: dict[str, Any], b: dict[str, Any] | None, field: str) -> str:
        x, y = a.get(field), (b or {}).get(field)
        if x is None or y is None or y == 0 or y == float("inf"):
            return "-"
        return f"{x / y:.2f}x"

    lines = [f"| rate/s | {BEST} tok/s vs round-robin (>= 2x) | TTFT p90 vs round-robin "
             "(<= 0.2x) | tok/s vs cache_aware (>= 1x) | TTFT p90 vs cache_aware (<= 1x) |",
             "|" + "---|" * 5]
    for rate in sorted({r["rate"] for r in rows if r["kind"] == "shared"}):
        best = pick("shared", BEST, rate)
        if best is None:
            continue
        rr, ca = pick("shared", "round-robin", rate), pick("shared", "vllm-router:cache_aware",
                                                            rate)
        lines.append(f"| {rate:g} | {ratio(best, rr, 'tok_s_load')} | "
                     f"{ratio(best, rr, 'ttft_p90')} | {ratio(best, ca, 'tok_s_load')} | "
                     f"{ratio(best, ca, 'ttft_p90')} |")
    best, ll = pick("control", BEST), pick("control", "least-loaded")
    if best is not None and ll is not None:
        lines.append(f"\ncontrol: {BEST} tok/s {ratio(best, ll, 'tok_s_load')} of least-loaded's "
                     f"(within 5 %), TTFT p90 {ratio(best, ll, 'ttft_p90')}")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rates", default="4,8,16,24", help="requests/s, light to beyond saturation")
    p.add_argument("--control-rate", type=float, default=8.0, help="beyond saturation")
    p.add_argument("--seconds", type=float, default=16.0, help="arrivals per run")
    p.add_argument("--warmup", type=float, default=6.0, help="seconds not counted")
    p.add_argument("--quick", action="store_true", help="one rate, 8 s runs, fewer targets")
    p.add_argument("--targets", default=",".join([*KUBEINFER, "prefix-affinity x2",
                                                  "prefix-score x2",
                                                  *(f"vllm-router:{v}" for v in VLLM_ROUTER)]))
    p.add_argument("--json", type=Path, help="write the raw results here")
    p.add_argument("--load-factor", type=float,
                   help="prefix-affinity's and prefix-score's bound (default: the table's)")
    p.add_argument("--kinds", default="shared,control")
    p.add_argument("--plot", type=Path, help="write PNG plots with this path prefix")
    p.add_argument("--repeat", type=int, default=1,
                   help="runs per point, workload seeds 1..N, pooled (see pooled())")
    a = p.parse_args()
    rates = [float(x) for x in a.rates.split(",")]
    targets = a.targets.split(",")
    if a.quick:
        rates, a.seconds, a.warmup = [rates[-1]], 8.0, 3.0
    if not (rb.VLLM_ROUTER_VENV / "bin" / "vllm-router").exists():
        rb.log("vllm-router not installed (bench/router/run.py --install): skipped")
        targets = [t for t in targets if not t.startswith("vllm-router:")]
    LOAD_FACTOR["value"] = a.load_factor
    kinds = a.kinds.split(",")
    rows = []
    with tempfile.TemporaryDirectory(prefix="kubeinfer-routing-") as tmp:
        workdir = Path(tmp)
        def point(target: str, kind: str, rate: float) -> dict[str, Any]:
            row = pooled([measure(target, kind, rate, a.seconds, a.warmup, workdir, seed)
                          for seed in range(1, a.repeat + 1)])
            if a.repeat > 1:
                log_row(row)
            return row

        for rate in rates if "shared" in kinds else []:
            for t in targets:
                rows.append(point(t, "shared", rate))
        for t in KUBEINFER:
            if t in targets and "control" in kinds:
                rows.append(point(t, "control", a.control_rate))
    print(table(rows))
    print()
    print(ratios(rows))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        kept = [{k: v for k, v in r.items() if k != "ttfts"} for r in rows]
        a.json.write_text(json.dumps(kept, indent=1))
        if a.plot:
            plot = [str(rb.CACHE / "plot-venv" / "bin" / "python"), str(HERE / "plot.py"),
                    str(a.json), str(a.plot)]
            if Path(plot[0]).exists():
                subprocess.run(plot, check=False)
            else:
                rb.log(f"no matplotlib venv at {plot[0]}: no plots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
