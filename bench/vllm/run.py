#!/usr/bin/env python3
"""Real vLLM (CPU build, tiny model) direct vs through kubeinfer-router.

One command, loopback only, bounded (a fixed number of requests per point;
about 3 minutes on 2 cores):

    make install vllm-build
    .venv/bin/python bench/vllm/run.py [--concurrency 1,4,16] [--requests 48] [--rounds 3]

One vLLM server and one router in front of it. For each concurrency, the
same streaming completions (max_tokens 32, ignore_eos) are sent directly and
through the router, interleaved round by round (order rotated) so that drift
of a shared machine hits both alike. Reported per point: requests/s, time to
first token p50/p90, whole-request latency p50, and router/direct ratios.
On the CPU backend vLLM itself is the bottleneck by far, so the ratios say
whether the router costs anything visible in front of a real engine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp
from kubeinfer.localcluster.ports import free_port
from kubeinfer.localcluster.realvllm.env import ensure_tiny_model, ensure_vllm_env
from kubeinfer.localcluster.realvllm.server import SERVED_NAME, VllmServer

HOST = "127.0.0.1"
MAX_TOKENS = 32
REQUEST_TIMEOUT_S = 120


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def one_stream(session: aiohttp.ClientSession, url: str, prompt: str) -> tuple[float, float]:
    """(ttft, total) seconds of one streamed completion; raises on anything but a clean end."""
    body = {
        "model": SERVED_NAME,
        "prompt": prompt,
        "max_tokens": MAX_TOKENS,
        "stream": True,
        "ignore_eos": True,
    }
    started = time.perf_counter()
    ttft: float | None = None
    done = False
    async with session.post(f"{url}/v1/completions", json=body) as response:
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {await response.text()}")
        async for line in response.content:
            if not line.startswith(b"data: "):
                continue
            if ttft is None:
                ttft = time.perf_counter() - started
            if line.strip() == b"data: [DONE]":
                done = True
    if not done or ttft is None:
        raise RuntimeError("stream ended without [DONE]")
    return ttft, time.perf_counter() - started


async def run_point(url: str, concurrency: int, requests: int) -> dict[str, float]:
    """`requests` streamed completions, `concurrency` at a time."""
    results: list[tuple[float, float]] = []
    failures = 0
    queue = list(range(requests))
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def client() -> None:
            nonlocal failures
            while queue:
                n = queue.pop()
                try:
                    results.append(await one_stream(session, url, f"the quick brown fox {n}"))
                except (aiohttp.ClientError, RuntimeError, TimeoutError) as error:
                    failures += 1
                    log(f"  failed: {error!r}"[:200])

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    ttfts = sorted(r[0] for r in results)
    totals = sorted(r[1] for r in results)
    return {
        "rps": len(results) / elapsed,
        "ttft_p50_ms": 1000 * ttfts[len(ttfts) // 2],
        "ttft_p90_ms": 1000 * ttfts[int(len(ttfts) * 0.9)],
        "latency_p50_ms": 1000 * totals[len(totals) // 2],
        "failed": float(failures),
    }


def start_router(backend: str, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    routes = workdir / "routes.json"
    routes.write_text(json.dumps({
        "service": "bench", "model": SERVED_NAME, "strategy": "least-loaded",
        "backends": [{"name": "vllm-0", "url": backend, "revision": "r1"}],
    }))  # fmt: skip
    argv = [str(Path(sys.executable).parent / "kubeinfer-router"), "--config", str(routes),
            "--host", HOST, "--port", str(port)]  # fmt: skip
    log_file = (workdir / "router.log").open("ab")
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log_file)
    url = f"http://{HOST}:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return process, url
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("kubeinfer-router did not become ready")
        time.sleep(0.2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--requests", type=int, default=48, help="per point and target")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    levels = [int(x) for x in args.concurrency.split(",")]
    env = ensure_vllm_env(log)
    model = ensure_tiny_model(env, log)
    workdir = Path(tempfile.mkdtemp(prefix="bench-vllm-"))
    server = VllmServer.start(env, model, workdir / "vllm.log")
    router: subprocess.Popen[bytes] | None = None
    try:
        server.wait_ready()
        router, router_url = start_router(server.url, workdir)
        targets = {"direct": server.url, "router": router_url}
        # Warm-up at every concurrency: vLLM's first batch of a new size pays
        # one-time costs (a first 16-wide batch took 1.2 s in one run).
        for level in levels:
            asyncio.run(run_point(server.url, level, 2 * level))
        raw: dict[tuple[str, int], list[dict[str, float]]] = {}
        for rnd in range(args.rounds):
            order = list(targets) if rnd % 2 == 0 else list(reversed(targets))
            for level in levels:
                for name in order:
                    point = asyncio.run(run_point(targets[name], level, args.requests))
                    raw.setdefault((name, level), []).append(point)
                    log(f"round {rnd + 1} {name:<6} c={level:<3} " + json.dumps(
                        {k: round(v, 1) for k, v in point.items()}))  # fmt: skip
    finally:
        if router is not None:
            router.terminate()
            router.wait(10)
        server.stop()
    summary = {
        f"{name}/c{level}": {k: statistics.median(p[k] for p in points) for k in points[0]}
        for (name, level), points in raw.items()
    }
    print(f"\nreal vLLM {SERVED_NAME} (CPU), {args.requests} streamed completions x "
          f"{MAX_TOKENS} tokens per point, median of {args.rounds} rounds")  # fmt: skip
    print(f"{'conc':>4} | {'direct rps':>10} {'router rps':>10} {'ratio':>6} | "
          f"{'TTFT p50 d/r ms':>16} {'TTFT p90 d/r ms':>16} | failed d/r")  # fmt: skip
    for level in levels:
        d, r = summary[f"direct/c{level}"], summary[f"router/c{level}"]
        print(f"{level:>4} | {d['rps']:>10.1f} {r['rps']:>10.1f} {r['rps'] / d['rps']:>6.2f} | "
              f"{d['ttft_p50_ms']:>7.0f}/{r['ttft_p50_ms']:<8.0f} "
              f"{d['ttft_p90_ms']:>7.0f}/{r['ttft_p90_ms']:<8.0f} | "
              f"{d['failed']:.0f}/{r['failed']:.0f}")  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
