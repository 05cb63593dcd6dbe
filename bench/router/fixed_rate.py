#!/usr/bin/env python3
"""Router benchmark at a fixed request rate (open loop): added p99 at 1,000 req/s.

    .venv/bin/python bench/router/fixed_rate.py              # 1,000 req/s, 10 s, 3 rounds
    .venv/bin/python bench/router/fixed_rate.py --rate 1000 --seconds 10 --rounds 3

wrk (``run.py``) has no rate control, so this sends non-streaming requests on a
fixed schedule (request i is due at t0 + i / rate) whatever the answers do,
and measures each latency from the request's *scheduled* time, so a stall
delays the requests queued behind it and shows up in their latency (no
coordinated omission). Targets: (a) one mock backend directly, (b)
kubeinfer-router in front of two mock backends with round robin, set up with
``run.py``'s helpers (same mock backends, same router configuration, same
pinning: the router on CPU 0, this load generator and the backends on CPU 1,
``nice -10`` when root); and (c) the same router moved onto CPU 1 too, so
that neither path has cross-CPU wake-ups (as ``run.py``'s one-CPU latency).
Rounds are interleaved (direct, router, then router, direct, ...); each
figure is the median over the rounds.

The load generator is asyncio on uvloop with a pool of raw keep-alive
HTTP/1.1 connections (one request in flight per connection; a request due
while every connection is busy waits in a queue, its wait counted). The
event loop's timers have millisecond granularity, so a request goes out up
to about 1 ms after its scheduled time; that timer lateness is reported (it
is the same for every target), and so is the latency from the actual send
(which leaves out both the lateness and any wait for a free connection).
Loopback only; bounded in time (about 2 minutes with the defaults).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import BODY, LOAD_CPU, Direct, Kubeinfer, Mocks, Target, cpu_seconds, log, on_cpu

REQUEST = (
    b"POST /v1/completions HTTP/1.1\r\nhost: %s\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\n\r\n%s"
)


class Conn(asyncio.Protocol):
    """One keep-alive connection, one request in flight; parses just enough HTTP."""

    def __init__(self, gen: Generator) -> None:
        self.gen = gen
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.scheduled = 0.0
        self.sent = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.scheduled:
            self.gen.errors += 1
            self.scheduled = 0.0

    def send(self, scheduled: float) -> None:
        assert self.transport is not None
        self.scheduled = scheduled
        self.sent = time.perf_counter()
        self.transport.write(self.gen.request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buf[:end].lower()
        at = head.find(b"\r\ncontent-length:")
        if at >= 0:
            stop = head.find(b"\r\n", at + 2)
            length = int(head[at + 17: stop if stop >= 0 else len(head)])
            if len(self.buf) < end + 4 + length:
                return
            rest = self.buf[end + 4 + length:]
        elif b"transfer-encoding: chunked" in head:
            term = self.buf.find(b"\r\n0\r\n\r\n", end)
            if term < 0:
                return
            rest = self.buf[term + 7:]
        else:
            rest = b""
        now = time.perf_counter()
        ok = self.buf.startswith(b"HTTP/1.1 200")
        self.buf = rest
        scheduled, self.scheduled = self.scheduled, 0.0
        self.gen.done(self, scheduled, self.sent, now, ok)  # may send the next one


class Generator:
    """Fixed-rate sender over a pool of connections; latencies in seconds."""

    def __init__(self, url: str, connections: int) -> None:
        host_port = url.removeprefix("http://")
        self.host, port = host_port.rsplit(":", 1)
        self.port = int(port)
        body = json.dumps(BODY).encode()
        self.request = REQUEST % (host_port.encode(), len(body), body)
        self.connections = connections
        self.idle: list[Conn] = []
        self.queue: collections.deque[float] = collections.deque()
        self.errors = 0
        self.queued = 0
        self.record = False
        self.total: list[float] = []   # completion - scheduled
        self.service: list[float] = []  # completion - actual send (after any queueing)
        self.late: list[float] = []     # timer lateness: fired - scheduled
        self.pending = 0
        self.sending = True
        self.drained = asyncio.Event()

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(self.connections):
            _, conn = await loop.create_connection(lambda: Conn(self), self.host, self.port)
            self.idle.append(conn)

    def done(self, conn: Conn, scheduled: float, sent: float, now: float, ok: bool) -> None:
        self.pending -= 1
        if not self.pending and not self.sending:
            self.drained.set()
        if not ok:
            self.errors += 1
        elif self.record:
            self.total.append(now - scheduled)
            self.service.append(now - sent)
        if self.queue:
            conn.send(self.queue.popleft())
        else:
            self.idle.append(conn)

    def fire(self, scheduled: float, now: float) -> None:
        self.pending += 1
        if self.record:
            self.late.append(now - scheduled)
        if self.idle:
            self.idle.pop().send(scheduled)
        else:
            self.queued += 1
            self.queue.append(scheduled)

    async def run(self, rate: float, seconds: float, warmup: float) -> float:
        """Send at ``rate`` for warmup + seconds; returns the achieved rate while recording."""
        interval = 1.0 / rate
        t0 = time.perf_counter() + 0.01
        n_warm, n = int(warmup * rate), int((warmup + seconds) * rate)
        start_rec = t0 + n_warm * interval
        last_send = start_rec
        i = 0
        while i < n:
            due = t0 + i * interval
            now = time.perf_counter()
            if due > now:
                await asyncio.sleep(due - now)
                continue
            # Everything due by now goes out (a late wake-up sends a small burst).
            while i < n and t0 + i * interval <= now:
                if i == n_warm:
                    self.record = True
                self.fire(t0 + i * interval, now)
                i += 1
            last_send = now
        achieved = (n - n_warm) / max(last_send - start_rec, 1e-9)
        self.sending = False
        if self.pending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.drained.wait(), 10)
        self.errors += self.pending
        return achieved


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile, in microseconds."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(len(s) * q + 0.999999) - 1))] * 1e6


def measure(url: str, rate: float, seconds: float, warmup: float, connections: int,
            pid: int | None) -> dict[str, Any]:
    import uvloop

    async def go() -> tuple[Generator, float]:
        gen = Generator(url, connections)
        await gen.connect()
        achieved = await gen.run(rate, seconds, warmup)
        for c in gen.idle:
            if c.transport is not None:
                c.transport.close()
        return gen, achieved

    cpu0 = cpu_seconds(os.getpid())
    pcpu0 = cpu_seconds(pid) if pid else 0.0
    gen, achieved = uvloop.run(go())
    out: dict[str, Any] = {
        "achieved_rps": achieved, "requests": len(gen.total), "errors": gen.errors,
        "queued": gen.queued,
        "loadgen_cpu": (cpu_seconds(os.getpid()) - cpu0) / (seconds + warmup),
    }
    if pid:
        out["proxy_cpu"] = (cpu_seconds(pid) - pcpu0) / (seconds + warmup)
    for name, vals in (("", gen.total), ("send_", gen.service), ("late_", gen.late)):
        if vals:
            for label, q in (("p50", 0.5), ("p99", 0.99), ("p999", 0.999)):
                out[f"{name}{label}_us"] = pct(vals, q)
            out[f"{name}max_us"] = max(vals) * 1e6
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=1000.0, help="requests per second")
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds at the rate, not recorded")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--connections", type=int, default=32, help="keep-alive connection pool")
    p.add_argument("--json", type=Path, help="also write the raw results here")
    a = p.parse_args()
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setaffinity(0, {int(LOAD_CPU)})
    if os.geteuid() == 0:
        with contextlib.suppress(OSError):
            os.nice(-10)
    targets: list[Target] = [Direct(), Kubeinfer()]
    runs: dict[str, list[dict[str, Any]]] = {"direct": [], "kubeinfer": [],
                                             "kubeinfer-1cpu": []}

    def record(name: str, r: dict[str, Any]) -> None:
        runs[name].append(r)
        log(f"  {name:14s} {r['achieved_rps']:7.1f} req/s  p50 {r['p50_us']:6.0f}"
            f"  p99 {r['p99_us']:6.0f}  p99.9 {r['p999_us']:6.0f} µs  "
            f"(from send: p50 {r['send_p50_us']:.0f} p99 {r['send_p99_us']:.0f}; "
            f"timer late p99 {r['late_p99_us']:.0f}) errors {r['errors']} queued {r['queued']}")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kubeinfer-bench-") as tmp:
        work = Path(tmp)
        mocks = Mocks(2, "--chunks", "16", "--chunk-delay", "0.002")
        try:
            for rnd in range(a.rounds):
                order = targets if rnd % 2 == 0 else targets[::-1]
                log(f"round {rnd + 1}/{a.rounds}: {', '.join(t.name for t in order)}")
                for t in order:
                    t.start(mocks.urls, work)
                    try:
                        record(t.name, measure(t.url, a.rate, a.seconds, a.warmup,
                                               a.connections, t.pid))
                        if t.name == "kubeinfer":
                            # Same again with the router moved onto the load CPU: no
                            # cross-CPU wake-ups on either path (as run.py's latency1).
                            with on_cpu(t.pid, LOAD_CPU):
                                record("kubeinfer-1cpu", measure(
                                    t.url, a.rate, a.seconds, a.warmup, a.connections, t.pid))
                    finally:
                        t.stop()
        finally:
            mocks.stop()
    elapsed = time.monotonic() - started
    keys = sorted({k for rs in runs.values() for r in rs for k in r})
    summary = {name: {k: statistics.median([r[k] for r in rs if k in r])
                      for k in keys if any(k in r for r in rs)}
               for name, rs in runs.items()}
    summary["errors"] = {name: sum(r["errors"] for r in rs) for name, rs in runs.items()}
    d, k, k1 = summary["direct"], summary["kubeinfer"], summary["kubeinfer-1cpu"]
    print(f"\n## Router at a fixed rate: {a.rate:g} req/s, {a.seconds:g} s per run, "
          f"median of {a.rounds} interleaved rounds ({elapsed:.0f} s)\n")
    print("kubeinfer: router on CPU 0, load and backends on CPU 1; kubeinfer-1cpu: router "
          "moved onto CPU 1 too. added = kubeinfer minus direct.\n")
    print("| | direct | kubeinfer | added | kubeinfer-1cpu | added |")
    print("|---|---|---|---|---|---|")
    print(f"| achieved rate (req/s) | {d['achieved_rps']:.1f} | {k['achieved_rps']:.1f} | | "
          f"{k1['achieved_rps']:.1f} | |")
    for label, key in (("p50", "p50_us"), ("p99", "p99_us"), ("p99.9", "p999_us"),
                       ("p50 from actual send", "send_p50_us"),
                       ("p99 from actual send", "send_p99_us"),
                       ("load generator timer lateness p99", "late_p99_us")):
        late = key.startswith("late")
        add = "" if late else f"{k[key] - d[key]:.0f}"
        add1 = "" if late else f"{k1[key] - d[key]:.0f}"
        print(f"| {label} (µs) | {d[key]:.0f} | {k[key]:.0f} | {add} | {k1[key]:.0f} | {add1} |")
    e = summary["errors"]
    print(f"| errors (all runs) | {e['direct']} | {e['kubeinfer']} | | {e['kubeinfer-1cpu']} | |")
    print(f"| load generator CPU (fraction of a core) | {d['loadgen_cpu']:.2f} | "
          f"{k['loadgen_cpu']:.2f} | | {k1['loadgen_cpu']:.2f} | |")
    print(f"| router CPU (fraction of a core) | | {k.get('proxy_cpu', 0):.2f} | | "
          f"{k1.get('proxy_cpu', 0):.2f} | |")
    for name, x in (("router on its own CPU", k), ("router on the load CPU", k1)):
        added_p99 = x["p99_us"] - d["p99_us"]
        print(f"\nTarget: added p99 < 1,000 µs at {a.rate:g} req/s, {name}: {added_p99:.0f} µs "
              f"-> {'met' if added_p99 < 1000 else 'MISSED'}")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"summary": summary, "runs": runs, "rate": a.rate,
                                      "seconds": a.seconds, "rounds": a.rounds}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
