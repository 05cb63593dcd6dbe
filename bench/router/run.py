#!/usr/bin/env python3
"""Router benchmark: kubeinfer-router vs direct, vllm-router (Rust) and nginx.

One command, loopback only, bounded in time (about 5 minutes; ``--quick``
about 1):

    .venv/bin/python bench/router/run.py            # add --install the first time

Every figure is the median of ``--rounds`` (default 3) runs, and the rounds
are interleaved: round 1 measures every target, then round 2 (in rotated
order), so slow drift of a shared machine hits all targets alike.

Pinning (the machine has 2 cores): the proxy under test runs alone on CPU 0
(``taskset -c 0``); the load generator (wrk) and the mock backends share
CPU 1. vllm-router's Tokio runtime and nginx (one worker, no master) are
pinned the same way, so "CPU per request" compares one core against one core.
When run as root, every process the benchmark starts runs at ``nice -10``
(all targets alike) so that other work on a shared machine disturbs it less.

What is measured (see docs/benchmarks.md for the latest table):
- latency: one request in flight (wrk -c1) for a few seconds; p50/p99, and
  the added latency = proxy minus direct. Measured twice: with the proxy on
  its own CPU (every hop is then a cross-CPU wake-up, about 50 µs each on
  this VM, which direct never pays) and with the proxy moved onto the load
  CPU (no cross-CPU wake-ups on either path: the proxy's own cost).
- saturation: wrk -c32 against fast mock backends; requests/s and the
  proxy's CPU microseconds per request from /proc/PID/stat.
- scaling: N = 1, 2, 4, 8 slot-limited backends (8 slots, 50 ms each, so
  160 req/s per backend, like a GPU's batch); efficiency = rps(N) / (N *
  rps(1)), how evenly the requests spread (max/min per backend), and the
  fraction of the backends' slot time spent serving (a simulated GPU's busy
  fraction). The service time is long enough that the shared load CPU is
  never the limit.
- streaming: sequential SSE requests with our own aiohttp client: time to
  first chunk and chunks delivered.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubeinfer.localcluster.ports import free_port

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kubeinfer" / "bench"
VLLM_ROUTER_VENV = CACHE / "vllm-router-venv"
HOST = "127.0.0.1"
PROXY_CPU = "0"
LOAD_CPU = "1"
BODY = {"model": "tiny", "prompt": "hello world", "max_tokens": 8}
SLOTS, SLOT_DELAY = 8, 0.05


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# On a shared machine, everything the benchmark starts runs at a higher
# priority (same for every target) so that other work disturbs it less.
NICE = ["nice", "-n", "-10"] if os.geteuid() == 0 and shutil.which("nice") else []


def pinned(cpu: str, argv: list[str]) -> list[str]:
    return [*NICE, "taskset", "-c", cpu, *argv] if shutil.which("taskset") else [*NICE, *argv]


def http_ok(url: str, body: dict[str, Any] | None = None) -> bool:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=2) as r:
            return bool(200 <= r.status < 300)
    except OSError:
        return False


def wait_until(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


@contextlib.contextmanager
def on_cpu(pid: int | None, cpu: str) -> Iterator[None]:
    """Move a running process (all its threads) to ``cpu`` for a while."""
    if pid is None or not shutil.which("taskset"):
        yield
        return
    subprocess.run(["taskset", "-a", "-p", "-c", cpu, str(pid)], check=True,
                   capture_output=True)
    try:
        yield
    finally:
        subprocess.run(["taskset", "-a", "-p", "-c", PROXY_CPU, str(pid)], check=False,
                       capture_output=True)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime, all threads
    return ticks / os.sysconf("SC_CLK_TCK")


# -- backends -----------------------------------------------------------------


class Mocks:
    """N mock backends in one process on the load CPU."""

    def __init__(self, n: int, *args: str) -> None:
        self.ports = [free_port() for _ in range(n)]
        argv = [sys.executable, "-P", "-m", "kubeinfer.localcluster.mockbackend", *args]
        for p in self.ports:
            argv += ["--port", str(p)]
        self.proc = subprocess.Popen(pinned(LOAD_CPU, argv), stdout=subprocess.DEVNULL)
        for url in self.urls:
            wait_until(lambda u=url: http_ok(u + "/health"), 10, f"mock {url}")

    @property
    def urls(self) -> list[str]:
        return [f"http://{HOST}:{p}" for p in self.ports]

    def stats(self) -> list[dict[str, Any]]:
        out = []
        for url in self.urls:
            with urllib.request.urlopen(url + "/_mock/stats", timeout=2) as r:
                out.append(json.loads(r.read()))
        return out

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


# -- proxies under test -------------------------------------------------------


class Target:
    name = ""
    proc: subprocess.Popen[bytes] | None = None
    url = ""

    def available(self) -> str | None:
        """None when it can run, else why not."""
        return None

    def start(self, backends: list[str], workdir: Path) -> None:
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


class Direct(Target):
    name = "direct"

    def start(self, backends: list[str], workdir: Path) -> None:
        self.url = backends[0]


class Kubeinfer(Target):
    name = "kubeinfer"

    def start(self, backends: list[str], workdir: Path) -> None:
        port = free_port()
        routes = workdir / "routes.json"
        routes.write_text(json.dumps({
            "service": "bench", "model": "tiny", "strategy": "round-robin",
            "backends": [{"name": f"b{i}", "url": u, "revision": "r1"}
                         for i, u in enumerate(backends)],
        }))
        argv = [str(VENV_BIN / "kubeinfer-router"), "--config", str(routes), "--host", HOST,
                "--port", str(port), "--access-log", str(workdir / "kubeinfer-access.log")]
        self.proc = subprocess.Popen(pinned(PROXY_CPU, argv), stdout=subprocess.DEVNULL,
                                     stderr=(workdir / "kubeinfer.log").open("ab"))
        self.url = f"http://{HOST}:{port}"
        wait_until(lambda: http_ok(self.url + "/readyz"), 20, "kubeinfer-router")


class VllmRouter(Target):
    name = "vllm-router"

    def binary(self) -> Path:
        return VLLM_ROUTER_VENV / "bin" / "vllm-router"

    def available(self) -> str | None:
        if not self.binary().exists():
            return (f"not installed at {self.binary()} "
                    "(run with --install: pip install vllm-router into that venv)")
        return None

    def start(self, backends: list[str], workdir: Path) -> None:
        port, prom = free_port(), free_port()
        argv = [str(self.binary()), "--host", HOST, "--port", str(port), "--worker-urls",
                *backends, "--policy", "round_robin", "--prometheus-port", str(prom),
                "--log-level", "warning"]
        self.proc = subprocess.Popen(pinned(PROXY_CPU, argv), stdout=subprocess.DEVNULL,
                                     stderr=(workdir / "vllm-router.log").open("ab"))
        self.url = f"http://{HOST}:{port}"
        wait_until(lambda: http_ok(self.url + "/v1/completions", BODY), 60, "vllm-router")


class Nginx(Target):
    name = "nginx"

    def available(self) -> str | None:
        if not shutil.which("nginx"):
            return "nginx not found (apt-get install nginx-light, or run with --install)"
        return None

    def start(self, backends: list[str], workdir: Path) -> None:
        port = free_port()
        root = workdir / "nginx"
        root.mkdir(exist_ok=True)
        servers = "\n".join(f"    server {u.removeprefix('http://')};" for u in backends)
        (root / "nginx.conf").write_text(f"""
worker_processes 1;
master_process off;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log {root}/access.log combined buffer=256k flush=1s;
  client_body_temp_path {root}/body;
  proxy_temp_path {root}/proxy;
  fastcgi_temp_path {root}/fastcgi;
  uwsgi_temp_path {root}/uwsgi;
  scgi_temp_path {root}/scgi;
  upstream backends {{
{servers}
    keepalive 512;
  }}
  server {{
    listen {HOST}:{port} reuseport;
    location / {{
      proxy_pass http://backends;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_next_upstream error timeout http_502 http_503;
    }}
  }}
}}
""")
        argv = ["nginx", "-p", str(root), "-c", str(root / "nginx.conf")]
        self.proc = subprocess.Popen(pinned(PROXY_CPU, argv), stdout=subprocess.DEVNULL,
                                     stderr=(root / "stderr.log").open("ab"))
        self.url = f"http://{HOST}:{port}"
        wait_until(lambda: http_ok(self.url + "/v1/completions", BODY), 10, "nginx")


# -- load ---------------------------------------------------------------------


@dataclass
class LoadRun:
    rps: float = 0.0
    requests: int = 0
    errors: int = 0
    p50_us: float | None = None
    p99_us: float | None = None
    cpu_us_per_req: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


_UNITS = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0}


def _duration_us(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(url: str, connections: int, seconds: float, workdir: Path,
        pid: int | None = None) -> LoadRun:
    script = workdir / "post.lua"
    if not script.exists():
        script.write_text(
            'wrk.method = "POST"\n'
            f"wrk.body = '{json.dumps(BODY)}'\n"
            'wrk.headers["Content-Type"] = "application/json"\n')
    argv = pinned(LOAD_CPU, ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency",
                             "-s", str(script), url + "/v1/completions"])
    before = cpu_seconds(pid) if pid else 0.0
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30).stdout
    after = cpu_seconds(pid) if pid else 0.0
    run = LoadRun()
    m = re.search(r"(\d+) requests in", out)
    run.requests = int(m.group(1)) if m else 0
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    run.rps = float(m.group(1)) if m else 0.0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    run.errors = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        run.errors += sum(int(x) for x in m.groups())
    for pct, attr in (("50", "p50_us"), ("99", "p99_us")):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.MULTILINE)
        if m:
            setattr(run, attr, _duration_us(m.group(1)))
    if pid and run.requests:
        run.cpu_us_per_req = (after - before) * 1e6 / run.requests
    return run


async def _stream_client(url: str, requests: int) -> dict[str, Any]:
    import aiohttp

    ttfc: list[float] = []
    events = 0
    broken = 0
    body = {**BODY, "stream": True}
    async with aiohttp.ClientSession() as s:
        for _ in range(requests):
            t0 = time.perf_counter()
            first = None
            try:
                async with s.post(url + "/v1/completions", json=body) as r:
                    async for line in r.content:
                        if line.startswith(b"data:"):
                            if first is None:
                                first = time.perf_counter() - t0
                            events += 1
            except aiohttp.ClientError:
                broken += 1
            if first is not None:
                ttfc.append(first * 1e6)
    ttfc.sort()
    return {"ttfc_p50_us": statistics.median(ttfc) if ttfc else None,
            "ttfc_p99_us": ttfc[int(len(ttfc) * 0.99) - 1] if ttfc else None,
            "events": events, "broken": broken}


def stream_run(url: str, requests: int) -> LoadRun:
    res = asyncio.run(_stream_client(url, requests))
    return LoadRun(requests=requests, errors=res["broken"], p50_us=res["ttfc_p50_us"],
                   p99_us=res["ttfc_p99_us"], extra={"events": res["events"]})


# -- the benchmark ------------------------------------------------------------


def median(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def install() -> None:
    if not shutil.which("wrk") or not shutil.which("nginx"):
        log("installing wrk and nginx-light with apt-get")
        subprocess.run(["apt-get", "update", "-q"], check=False)
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk", "nginx-light"], check=False)
    if not (VLLM_ROUTER_VENV / "bin" / "vllm-router").exists():
        log(f"installing vllm-router into {VLLM_ROUTER_VENV}")
        subprocess.run([sys.executable, "-P", "-m", "venv", str(VLLM_ROUTER_VENV)], check=True)
        subprocess.run([str(VLLM_ROUTER_VENV / "bin" / "pip"), "install", "-q", "vllm-router"],
                       check=False)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="1 s runs (a smoke test, noisy)")
    p.add_argument("--install", action="store_true",
                   help="apt-get install wrk nginx-light; pip install vllm-router (own venv)")
    p.add_argument("--targets", default="direct,kubeinfer,vllm-router,nginx")
    p.add_argument("--scaling", default="1,2,4,8")
    p.add_argument("--json", type=Path, help="also write the raw results here")
    a = p.parse_args()
    if a.install:
        install()
    if not shutil.which("wrk"):
        log("wrk not found: apt-get install wrk (or run with --install)")
        return 2
    lat_s, sat_s, scale_s, streams = (1, 1, 1, 10) if a.quick else (3, 4, 5, 40)
    all_targets: dict[str, Target] = {t.name: t for t in (Direct(), Kubeinfer(), VllmRouter(),
                                                          Nginx())}
    targets: list[Target] = []
    skipped: dict[str, str] = {}
    for name in a.targets.split(","):
        t = all_targets[name]
        why = t.available()
        if why:
            skipped[name] = why
            log(f"skipping {name}: {why}")
        else:
            targets.append(t)
    proxies = [t for t in targets if t.name != "direct"]
    sizes = [int(n) for n in a.scaling.split(",")]
    results: dict[str, dict[str, list[LoadRun]]] = {t.name: {} for t in targets}

    def record(target: str, key: str, run: LoadRun) -> None:
        results[target].setdefault(key, []).append(run)
        cpu = f", {run.cpu_us_per_req:.1f} µs CPU/req" if run.cpu_us_per_req else ""
        log(f"  {target:12s} {key:10s} {run.rps:9.0f} req/s p50 {_f(run.p50_us)} µs "
            f"p99 {_f(run.p99_us)} µs{cpu}, errors {run.errors} {run.extra or ''}")

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kubeinfer-bench-") as tmp:
        work = Path(tmp)
        for rnd in range(a.rounds):
            shift = rnd % len(targets)
            order = targets[shift:] + targets[:shift]
            log(f"round {rnd + 1}/{a.rounds}: {', '.join(t.name for t in order)}")
            # Fast backends: latency, saturation, streaming.
            fast = Mocks(2, "--chunks", "16", "--chunk-delay", "0.002")
            try:
                for t in order:
                    t.start(fast.urls, work)
                    try:
                        wrk(t.url, 4, 0.5, work)  # warm-up: connections, caches
                        record(t.name, "latency", wrk(t.url, 1, lat_s, work))
                        # Same again with the proxy on the load CPU: direct has no
                        # cross-CPU wake-ups, and here neither has the proxy.
                        with on_cpu(t.pid, LOAD_CPU):
                            record(t.name, "latency1", wrk(t.url, 1, lat_s, work))
                        record(t.name, "saturation", wrk(t.url, 32, sat_s, work, t.pid))
                        record(t.name, "streaming", stream_run(t.url, streams))
                    finally:
                        t.stop()
            finally:
                fast.stop()
            # Slot-limited backends: scaling.
            for n in sizes:
                slow = Mocks(n, "--delay", str(SLOT_DELAY), "--slots", str(SLOTS))
                try:
                    for t in order:
                        if t.name == "direct" and n > 1:
                            continue
                        t.start(slow.urls, work)
                        try:
                            wrk(t.url, SLOTS * n, 0.5, work)
                            before, t0 = slow.stats(), time.monotonic()
                            run = wrk(t.url, SLOTS * n * 2, scale_s, work, t.pid)
                            after, t1 = slow.stats(), time.monotonic()
                            run.extra["spread"] = [
                                x["requests"] - y["requests"]
                                for x, y in zip(after, before, strict=True)]
                            busy = sum(x["busy_seconds"] - y["busy_seconds"]
                                       for x, y in zip(after, before, strict=True))
                            run.extra["busy"] = round(busy / (SLOTS * n * (t1 - t0)), 4)
                            record(t.name, f"scale{n}", run)
                        finally:
                            t.stop()
                finally:
                    slow.stop()
    elapsed = time.monotonic() - started
    summary = summarize(results, sizes, proxies)
    print_report(summary, sizes, skipped, a.rounds, elapsed)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"summary": summary, "skipped": skipped,
                                      "rounds": a.rounds, "seconds": elapsed}, indent=2))
    return 0


def summarize(results: dict[str, dict[str, list[LoadRun]]], sizes: list[int],
              proxies: list[Target]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    direct = results.get("direct", {})
    d_p50 = median([r.p50_us for r in direct.get("latency", [])])
    d_p99 = median([r.p99_us for r in direct.get("latency", [])])
    d_ttfc = median([r.p50_us for r in direct.get("streaming", [])])
    d1_p50 = median([r.p50_us for r in direct.get("latency1", [])])
    d1_p99 = median([r.p99_us for r in direct.get("latency1", [])])
    for name, runs in results.items():
        s: dict[str, Any] = {}
        lat = runs.get("latency", [])
        s["p50_us"] = median([r.p50_us for r in lat])
        s["p99_us"] = median([r.p99_us for r in lat])
        if name != "direct" and d_p50 is not None and s["p50_us"] is not None:
            s["added_p50_us"] = s["p50_us"] - d_p50
            s["added_p99_us"] = (s["p99_us"] - d_p99) if s["p99_us"] and d_p99 else None
        lat1 = runs.get("latency1", [])
        s["p50_1cpu_us"] = median([r.p50_us for r in lat1])
        s["p99_1cpu_us"] = median([r.p99_us for r in lat1])
        if name != "direct" and d1_p50 is not None and s["p50_1cpu_us"] is not None:
            s["added_p50_1cpu_us"] = s["p50_1cpu_us"] - d1_p50
            s["added_p99_1cpu_us"] = ((s["p99_1cpu_us"] - d1_p99)
                                      if s["p99_1cpu_us"] and d1_p99 else None)
        sat = runs.get("saturation", [])
        s["rps"] = median([r.rps for r in sat])
        s["cpu_us_per_req"] = median([r.cpu_us_per_req for r in sat])
        st = runs.get("streaming", [])
        s["ttfc_p50_us"] = median([r.p50_us for r in st])
        if name != "direct" and d_ttfc is not None and s["ttfc_p50_us"] is not None:
            s["added_ttfc_us"] = s["ttfc_p50_us"] - d_ttfc
        s["stream_events"] = sum(r.extra.get("events", 0) for r in st)
        s["stream_expected"] = sum(r.requests for r in st) * 18  # 16 chunks, usage, [DONE]
        s["errors"] = sum(r.errors for rs in runs.values() for r in rs)
        base = median([r.rps for r in runs.get("scale1", [])])
        for n in sizes:
            sc = runs.get(f"scale{n}", [])
            if not sc:
                continue
            rps = median([r.rps for r in sc])
            s[f"scale{n}_rps"] = rps
            if base and rps is not None:
                s[f"scale{n}_eff"] = rps / (n * base)
            s[f"scale{n}_busy"] = median([r.extra.get("busy") for r in sc])
            spreads = [r.extra["spread"] for r in sc if min(r.extra["spread"]) > 0]
            if spreads:
                s[f"scale{n}_spread"] = median([max(x) / min(x) for x in spreads])
        out[name] = s
    return out


def _f(v: float | None, fmt: str = "{:.0f}") -> str:
    return "n/a" if v is None else fmt.format(v)


def print_report(s: dict[str, dict[str, Any]], sizes: list[int], skipped: dict[str, str],
                 rounds: int, elapsed: float) -> None:
    names = list(s)
    print(f"\n## Router benchmark (median of {rounds} interleaved rounds, {elapsed:.0f} s)\n")
    print("| | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("1 in flight, all on one CPU: p50 (µs)", lambda x: _f(x.get("p50_1cpu_us"))),
        ("1 in flight, all on one CPU: p99 (µs)", lambda x: _f(x.get("p99_1cpu_us"))),
        ("added p50 vs direct, one CPU (µs)", lambda x: _f(x.get("added_p50_1cpu_us"))),
        ("added p99 vs direct, one CPU (µs)", lambda x: _f(x.get("added_p99_1cpu_us"))),
        ("1 in flight, proxy on its own CPU: p50 (µs)", lambda x: _f(x.get("p50_us"))),
        ("1 in flight, proxy on its own CPU: p99 (µs)", lambda x: _f(x.get("p99_us"))),
        ("added p50 vs direct, own CPU (µs)", lambda x: _f(x.get("added_p50_us"))),
        ("added p99 vs direct, own CPU (µs)", lambda x: _f(x.get("added_p99_us"))),
        ("req/s at saturation (c=32)", lambda x: _f(x.get("rps"))),
        ("proxy CPU per request (µs)", lambda x: _f(x.get("cpu_us_per_req"), "{:.1f}")),
        ("stream: time to first chunk p50 (µs)", lambda x: _f(x.get("ttfc_p50_us"))),
        ("stream: added TTFC vs direct (µs)", lambda x: _f(x.get("added_ttfc_us"))),
        ("stream: chunks delivered / expected",
         lambda x: f"{x.get('stream_events', 0)}/{x.get('stream_expected', 0)}"),
    ]
    for n in sizes:
        rows.append((f"scaling N={n}: req/s", lambda x, n=n: _f(x.get(f"scale{n}_rps"))))
        rows.append((f"scaling N={n}: efficiency",
                     lambda x, n=n: _f(x.get(f"scale{n}_eff"), "{:.3f}")))
        rows.append((f"scaling N={n}: backend slots busy",
                     lambda x, n=n: _f(x.get(f"scale{n}_busy"), "{:.3f}")))
        if n > 1:
            rows.append((f"scaling N={n}: max/min per backend",
                         lambda x, n=n: _f(x.get(f"scale{n}_spread"), "{:.3f}")))
    rows.append(("errors (all runs)", lambda x: str(x.get("errors", 0))))
    for label, fn in rows:
        print(f"| {label} | " + " | ".join(fn(s[n]) for n in names) + " |")
    k = s.get("kubeinfer")
    if k:
        print("\nRatios (kubeinfer / peer):")
        for peer in ("vllm-router", "nginx"):
            if peer not in s:
                continue
            o = s[peer]
            cpu = (k["cpu_us_per_req"] / o["cpu_us_per_req"]
                   if k.get("cpu_us_per_req") and o.get("cpu_us_per_req") else None)
            rps = k["rps"] / o["rps"] if k.get("rps") and o.get("rps") else None
            print(f"- vs {peer}: CPU/request {_f(cpu, '{:.2f}')}x, req/s {_f(rps, '{:.2f}')}x")
        print("\nTargets:")
        cpu_vr = s.get("vllm-router", {}).get("cpu_us_per_req")
        checks = [
            ("added p50 <= 300 µs (one CPU)", k.get("added_p50_1cpu_us"), lambda v: v <= 300),
            ("added p50 <= 300 µs (proxy on its own CPU)", k.get("added_p50_us"),
             lambda v: v <= 300),
            ("CPU/request <= 1.5x vllm-router",
             (k["cpu_us_per_req"] / cpu_vr) if cpu_vr and k.get("cpu_us_per_req") else None,
             lambda v: v <= 1.5),
            *[(f"scaling efficiency N={n} >= 0.97", k.get(f"scale{n}_eff"), lambda v: v >= 0.97)
              for n in sizes if n > 1],
            ("zero errors", k.get("errors"), lambda v: v == 0),
        ]
        for label, value, ok in checks:
            verdict = "n/a" if value is None else ("met" if ok(value) else "MISSED")
            print(f"- {label}: {_f(value, '{:.3f}') if value is not None else 'n/a'} -> {verdict}")
    for name, why in skipped.items():
        print(f"\n{name} skipped: {why}")


if __name__ == "__main__":
    sys.exit(main())
