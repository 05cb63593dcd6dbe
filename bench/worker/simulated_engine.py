"""How fast is the simulated engine? (Not a test: prints numbers.)

    .venv/bin/python -P bench/worker/simulated_engine.py

Starts `python -m kubeinfer.worker.simulated` alone on 127.0.0.1 and
drives it with a minimal keep-alive HTTP/1.1 client (raw sockets, so the
client costs little CPU), then reports requests/s, latency, the engine's
CPU time per request and per streamed token, and the simulated GPU's busy
fraction under a saturating load.
"""

import argparse
import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

HOST = "127.0.0.1"
MODEL = {"name": "bench", "source": "org/bench", "engineArgs": {"maxModelLen": 4096}}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def request_bytes(body: dict[str, object]) -> bytes:
    raw = json.dumps(body).encode()
    return (
        b"POST /v1/completions HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(raw), raw)
    )


async def one_connection(
    port: int, payload: bytes, stream: bool, count: int, out: list[float]
) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    for _ in range(count):
        started = time.perf_counter()
        writer.write(payload)
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        if stream:
            await reader.readuntil(b"\r\n0\r\n\r\n")
        else:
            length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
        out.append(time.perf_counter() - started)
    writer.close()


@dataclass
class Result:
    requests: int
    seconds: float
    latencies: list[float]
    engine_cpu: float

    def line(self, tokens_per_request: int, stream: bool) -> str:
        lat = sorted(self.latencies)
        rps = self.requests / self.seconds
        text = (
            f"{rps:8.0f} req/s  p50 {lat[len(lat) // 2] * 1e3:6.2f} ms  "
            f"p99 {lat[int(len(lat) * 0.99)] * 1e3:6.2f} ms  "
            f"engine CPU {self.engine_cpu / self.requests * 1e6:6.0f} us/request"
        )
        if stream:
            per_token = self.engine_cpu / (self.requests * tokens_per_request) * 1e6
            text += f" ({per_token:.1f} us/token)"
        return text


async def drive(
    port: int, pid: int, body: dict[str, object], connections: int, total: int
) -> Result:
    payload = request_bytes(body)
    latencies: list[float] = []
    cpu = cpu_seconds(pid)
    started = time.perf_counter()
    per = total // connections
    await asyncio.gather(
        *(
            one_connection(port, payload, bool(body.get("stream")), per, latencies)
            for _ in range(connections)
        )
    )
    seconds = time.perf_counter() - started
    return Result(len(latencies), seconds, latencies, cpu_seconds(pid) - cpu)


def scrape(port: int, name: str) -> float:
    with socket.create_connection((HOST, port)) as sock:
        sock.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    for line in data.decode().splitlines():
        if line.startswith(name):
            return float(line.rsplit(" ", 1)[1])
    raise LookupError(name)


# The floor: aiohttp's low-level server answering a fixed body, nothing else.
FLOOR_SERVER = """
import sys, uvloop
from aiohttp import web
BODY = b'{"choices":[{"text":"' + b"x" * 80 + b'"}]}'
async def handle(request):
    await request.read()
    return web.Response(body=BODY, content_type="application/json")
async def main():
    runner = web.ServerRunner(web.Server(handle, access_log=None))
    await runner.setup()
    await web.TCPSite(runner, sys.argv[1], int(sys.argv[2])).start()
    await __import__("asyncio").Event().wait()
uvloop.run(main())
"""


def start_engine(simulator: dict[str, object] | None) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    if simulator is None:
        command = [sys.executable, "-P", "-c", FLOOR_SERVER, HOST, str(port)]
    else:
        command = [
            sys.executable, "-P", "-m", "kubeinfer.worker.simulated",
            "--model-spec", json.dumps(MODEL), "--simulator-spec", json.dumps(simulator),
            "--host", HOST, "--port", str(port),
        ]  # fmt: skip
    process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex((HOST, port)) == 0:
                return process, port
        time.sleep(0.05)
    raise TimeoutError("engine did not listen")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()

    print(f"simulated engine, {os.cpu_count()} CPUs, {args.connections} connections")
    process, port = start_engine(None)
    try:
        await drive(port, process.pid, {"prompt": "warm"}, 8, 800)
        result = await drive(port, process.pid, {"prompt": "hi"}, args.connections, args.requests)
        print("floor: bare aiohttp server, fixed body:    ", result.line(16, False))
    finally:
        process.terminate()
        process.wait()
    process, port = start_engine({"ttftMs": 0, "tpotMs": 0, "maxNumSeqs": 256})
    try:
        await drive(port, process.pid, {"prompt": "warm", "max_tokens": 16}, 8, 800)
        result = await drive(
            port, process.pid, {"prompt": "hi", "max_tokens": 16}, args.connections, args.requests
        )
        print("non-streaming, 16 tokens, no service time: ", result.line(16, False))
        result = await drive(
            port, process.pid, {"prompt": "hi", "max_tokens": 16, "stream": True},
            args.connections, args.requests // 4,
        )  # fmt: skip
        print("streaming, 16 tokens, no service time:     ", result.line(16, True))
    finally:
        process.terminate()
        process.wait()

    # Per-token cost when tokens are paced: 64 streams at 5 ms per token.
    process, port = start_engine({"ttftMs": 20, "tpotMs": 5, "maxNumSeqs": 64})
    try:
        body = {"prompt": "hi", "max_tokens": 100, "stream": True}
        result = await drive(port, process.pid, body, 64, 640)
        print("streaming, 100 tokens at 5 ms, 64 streams: ", result.line(100, True))
    finally:
        process.terminate()
        process.wait()

    # Busy fraction under a saturating load: 8 slots, 32 clients.
    process, port = start_engine({"ttftMs": 10, "tpotMs": 2, "maxNumSeqs": 8})
    try:
        busy = scrape(port, "kubeinfer_simulated_gpu_busy_seconds_total")
        started = time.perf_counter()
        result = await drive(port, process.pid, {"prompt": "hi", "max_tokens": 20}, 32, 3200)
        wall = time.perf_counter() - started
        busy = scrape(port, "kubeinfer_simulated_gpu_busy_seconds_total") - busy
        ideal = 3200 / 8 * (0.010 + 19 * 0.002)
        print(
            f"saturated (8 slots, 32 clients): busy fraction {busy / wall:.3f}, "
            f"{result.requests / wall:.0f} req/s (ideal {3200 / ideal:.0f} req/s)"
        )
    finally:
        process.terminate()
        process.wait()


if __name__ == "__main__":
    asyncio.run(main())
