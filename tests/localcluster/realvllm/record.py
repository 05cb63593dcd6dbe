"""Record what real vLLM says into tests/fixtures/vllm-0.32.0 (`kubeinfer cluster vllm --record`).

Three kinds of files:

- bodies and raw responses of the requests in `REQUESTS`, sent to a
  fresh server (the comparison test sends the same table to vLLM and to
  the simulated engine);
- `metrics.txt` after those requests;
- what clients see when the engine dies or vLLM gets SIGTERM, as JSON
  summaries (`Outcome`): status, how the connection ended, the SSE events
  received, the last ones raw. Engine death is a SIGKILL of the EngineCore
  child; SIGTERM goes to the API server process only (what the worker
  agent and a container runtime send) or, in one run, to its whole
  process group (what a terminal's Ctrl-C does).

Ids, timestamps, fingerprints and the (random-weight) text stay as
recorded: the tests compare shapes, never those values.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubeinfer.localcluster.realvllm import rawhttp
from kubeinfer.localcluster.realvllm.env import VllmEnv
from kubeinfer.localcluster.realvllm.server import SERVED_NAME, VllmServer

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Exchange:
    """One request of the recording, and where its answer goes."""

    file: str
    method: str
    path: str
    body: Any = None
    raw: bytes | None = None
    # "body": the body alone; "http": status line, headers and body.
    keep: str = "body"


CHAT = [{"role": "user", "content": "hi"}]
USAGE = {"include_usage": True}
# ignore_eos: a random-weight model may draw its end token at any point;
# the recorded streams should have max_tokens tokens.
REQUESTS: tuple[Exchange, ...] = (
    Exchange("health.txt", "GET", "/health", keep="http"),
    Exchange("version.json", "GET", "/version"),
    Exchange("models.json", "GET", "/v1/models"),
    Exchange("completion.json", "POST", "/v1/completions",
             {"model": SERVED_NAME, "prompt": "hi", "max_tokens": 8, "ignore_eos": True}),
    Exchange("completion_stream.sse", "POST", "/v1/completions",
             {"model": SERVED_NAME, "prompt": "hi", "max_tokens": 5, "ignore_eos": True,
              "stream": True, "stream_options": USAGE}),
    Exchange("chat.json", "POST", "/v1/chat/completions",
             {"model": SERVED_NAME, "messages": CHAT, "max_tokens": 8, "ignore_eos": True}),
    Exchange("chat_stream.sse", "POST", "/v1/chat/completions",
             {"model": SERVED_NAME, "messages": CHAT, "max_tokens": 5, "ignore_eos": True,
              "stream": True, "stream_options": USAGE}),
    Exchange("err_bad_json.txt", "POST", "/v1/completions",
             raw=b'{"model":"tiny","prompt":"x",', keep="http"),
    Exchange("err_missing_messages.txt", "POST", "/v1/chat/completions",
             {"model": SERVED_NAME}, keep="http"),
    Exchange("err_too_long.txt", "POST", "/v1/completions",
             {"model": SERVED_NAME, "prompt": "x", "max_tokens": 100000}, keep="http"),
    Exchange("err_unknown_model.txt", "POST", "/v1/completions",
             {"model": "nope", "prompt": "x"}, keep="http"),
)  # fmt: skip

# Long enough that a SIGTERM or SIGKILL certainly lands mid-request.
LONG_TOKENS = 480
LONG_STREAM = {"model": SERVED_NAME, "prompt": "stream", "max_tokens": LONG_TOKENS,
               "ignore_eos": True, "stream": True}  # fmt: skip
LONG_PLAIN = {"model": SERVED_NAME, "prompt": "plain", "max_tokens": LONG_TOKENS,
              "ignore_eos": True}  # fmt: skip
REQUEST_TIMEOUT_S = 120.0
# After a signal: how long a client waits for the rest of its answer, and
# how long the server gets to exit. vLLM can hang both (see the README).
AFTER_SIGNAL_TIMEOUT_S = 20.0


def send(server: VllmServer, exchange: Exchange) -> rawhttp.RawResponse:
    return rawhttp.request(
        server.host, server.port, exchange.method, exchange.path, exchange.body,
        raw=exchange.raw, timeout_s=REQUEST_TIMEOUT_S,
    )  # fmt: skip


def sse_data(body: bytes) -> list[str]:
    """The `data:` payloads of an SSE body, in order."""
    return [
        event[len(b"data: ") :].decode(errors="replace")
        for event in body.split(b"\n\n")
        if event.startswith(b"data: ")
    ]


def finish_reasons(events: list[str]) -> list[str]:
    out = []
    for event in events:
        if event == "[DONE]":
            continue
        try:
            chunk = json.loads(event)
        except ValueError:
            continue
        for choice in chunk.get("choices") or []:
            if choice.get("finish_reason") is not None:
                out.append(choice["finish_reason"])
    return out


def outcome(response: rawhttp.RawResponse, signalled_at: float) -> dict[str, Any]:
    """What a client saw of one request that was running when the signal came."""
    events = sse_data(response.body)
    streamed = response.header("content-type") is not None and "event-stream" in (
        response.header("content-type") or ""
    )
    out: dict[str, Any] = {
        "status": response.status,
        "ending": response.ending,
        "seconds_after_signal": round(response.ended_at - signalled_at, 2),
    }
    if streamed:
        out["events"] = len(events)
        out["finish_reasons"] = finish_reasons(events)
        out["done"] = bool(events) and events[-1] == "[DONE]"
        out["last_events"] = events[-3:]
    else:
        out["body"] = response.body.decode(errors="replace")
    return out


def running_requests(server: VllmServer) -> float:
    metrics = rawhttp.request(server.host, server.port, "GET", "/metrics", timeout_s=10)
    for line in metrics.body.decode().splitlines():
        if line.startswith("vllm:num_requests_running{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.05)


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return out
    for child in map(int, children):
        out.append(child)
        out.extend(descendants(child))
    return out


def engine_core_pid(server: VllmServer) -> int:
    """The EngineCore process (vLLM names it with setproctitle)."""
    for pid in descendants(server.process.pid):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"EngineCore" in command:
            return pid
    raise RuntimeError(f"no EngineCore child under {server.process.pid}")


def with_two_running(
    server: VllmServer, act: Callable[[], None], after_s: float
) -> tuple[rawhttp.RawResponse, rawhttp.RawResponse, float]:
    """Start a long stream and a long plain request; once both run (+after_s), `act`."""

    def post(body: dict[str, Any]) -> rawhttp.RawResponse:
        return rawhttp.request(server.host, server.port, "POST", "/v1/completions", body,
                               timeout_s=after_s + 60 + AFTER_SIGNAL_TIMEOUT_S)  # fmt: skip

    with ThreadPoolExecutor(2) as pool:
        stream: Future[rawhttp.RawResponse] = pool.submit(post, LONG_STREAM)
        plain: Future[rawhttp.RawResponse] = pool.submit(post, LONG_PLAIN)
        wait_for(lambda: running_requests(server) >= 2, 60, "both long requests to run")
        if after_s > 0:
            deadline = time.monotonic() + after_s
            wait_for(lambda: time.monotonic() >= deadline, after_s + 1, "the delay")
        signalled_at = time.monotonic()
        act()
        wait = after_s + 60 + AFTER_SIGNAL_TIMEOUT_S + 5
        return stream.result(wait), plain.result(wait), signalled_at


def after_signal(server: VllmServer, signalled_at: float) -> dict[str, Any]:
    """/health right after, then how and when the API server exited."""
    health = rawhttp.request(server.host, server.port, "GET", "/health", timeout_s=10)
    later = rawhttp.request(server.host, server.port, "POST", "/v1/completions",
                            {"model": SERVED_NAME, "prompt": "x", "max_tokens": 1},
                            timeout_s=10)  # fmt: skip
    try:
        code: int | None = server.process.wait(AFTER_SIGNAL_TIMEOUT_S)
    except subprocess.TimeoutExpired:  # still running is a result too
        code = None
    return {
        "health_after": {"status": health.status, "ending": health.ending},
        "request_after": {"status": later.status, "ending": later.ending,
                          "body": later.body.decode(errors="replace")},
        "server_exit_code": code,
        "server_exit_seconds_after_signal": round(time.monotonic() - signalled_at, 1),
    }  # fmt: skip


def record_requests(server: VllmServer, out: Path, progress: Progress) -> None:
    for exchange in REQUESTS:
        response = send(server, exchange)
        if response.ending != "complete":
            raise RuntimeError(f"{exchange.file}: the response ended {response.ending}")
        data = response.as_text() if exchange.keep == "http" else response.body.decode()
        (out / exchange.file).write_text(data)
        progress(f"[record] {exchange.file}: {response.status}")


def record_engine_death(server: VllmServer, out: Path, progress: Progress) -> None:
    core = engine_core_pid(server)

    def kill_core() -> None:
        os.kill(core, signal.SIGKILL)

    stream, plain, at = with_two_running(server, kill_core, after_s=0.5)
    summary = {
        "what": "SIGKILL of the EngineCore process while a stream and a plain request ran",
        "stream": outcome(stream, at),
        "plain": outcome(plain, at),
        **after_signal(server, at),
    }
    (out / "engine_death.json").write_text(json.dumps(summary, indent=2) + "\n")
    dead_body = summary["request_after"]["body"] if summary["request_after"]["status"] else ""
    if plain.status == 500:
        dead_body = plain.body.decode()
    (out / "engine_dead_completion_500.json").write_text(dead_body)
    progress(f"[record] engine_death.json: {json.dumps(summary)[:300]}")


def record_sigterm(
    server: VllmServer, group: bool, after_s: float, progress: Progress
) -> dict[str, Any]:
    def term() -> None:
        if group:
            server.signal_group(signal.SIGTERM)
        else:
            server.process.send_signal(signal.SIGTERM)

    stream, plain, at = with_two_running(server, term, after_s=after_s)
    summary = {
        "what": f"SIGTERM to the API server {'process group' if group else 'process'} "
        f"{after_s} s after a stream and a plain request started running",
        "stream": outcome(stream, at),
        "plain": outcome(plain, at),
        **after_signal(server, at),
    }
    progress(f"[record] sigterm: {json.dumps(summary)[:400]}")
    return summary


# (to the whole group?, seconds after both requests run) per SIGTERM run.
SIGTERM_RUNS = ((False, 0.0), (False, 2.0), (True, 2.0))
PARTS = ("requests", "sigterm")


def record(
    env: VllmEnv,
    model: Path,
    out: Path,
    logs: Path,
    progress: Progress,
    parts: tuple[str, ...],
    sigterm_runs: tuple[tuple[bool, float], ...] = SIGTERM_RUNS,
) -> None:
    """Write the fixture files of `parts` into `out` (vLLM logs go to `logs`).

    "requests": REQUESTS, metrics.txt, then engine death (one server);
    "sigterm": one fresh server per SIGTERM_RUNS entry. Raises RuntimeError.
    """
    out.mkdir(parents=True, exist_ok=True)
    if "requests" in parts:
        server = VllmServer.start(env, model, logs / "vllm-main.log")
        try:
            server.wait_ready()
            progress(f"[record] vLLM ready on {server.url}")
            record_requests(server, out, progress)
            metrics = rawhttp.request(server.host, server.port, "GET", "/metrics", timeout_s=10)
            (out / "metrics.txt").write_text(metrics.body.decode())
            record_engine_death(server, out, progress)
        finally:
            server.stop(grace_s=5)
    if "sigterm" in parts:
        record_sigterm_runs(env, model, out, logs, progress, sigterm_runs)


def record_sigterm_runs(
    env: VllmEnv,
    model: Path,
    out: Path,
    logs: Path,
    progress: Progress,
    runs_to_make: tuple[tuple[bool, float], ...],
) -> None:
    runs = []
    for index, (group, after_s) in enumerate(runs_to_make):
        server = VllmServer.start(env, model, logs / f"vllm-sigterm-{index}.log")
        try:
            server.wait_ready()
            runs.append(record_sigterm(server, group, after_s, progress))
            # After every run: a later run's failed start keeps the earlier ones.
            (out / "sigterm.json").write_text(json.dumps(runs, indent=2) + "\n")
        finally:
            server.stop(grace_s=5)


def main(argv: list[str]) -> int:
    """`python -m kubeinfer.localcluster.realvllm.record [OUT] [--only PART] [--runs N]`."""
    from kubeinfer.localcluster.realvllm.env import ensure_tiny_model, ensure_vllm_env

    parser = argparse.ArgumentParser(prog="python -m kubeinfer.localcluster.realvllm.record")
    parser.add_argument("out", type=Path, nargs="?", default=Path("tests/fixtures/vllm-0.32.0"))
    parser.add_argument("--only", choices=PARTS, help="record only this part")
    parser.add_argument("--runs", type=int, default=len(SIGTERM_RUNS),
                        help="SIGTERM runs to make (each needs a fresh server)")  # fmt: skip
    args = parser.parse_args(argv)
    out: Path = args.out
    parts = (args.only,) if args.only else PARTS

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    env = ensure_vllm_env(progress)
    model = ensure_tiny_model(env, progress)
    logs = Path(tempfile.mkdtemp(prefix="vllm-record-"))
    progress(f"[record] vLLM logs in {logs}")
    record(env, model, out, logs, progress, parts, SIGTERM_RUNS[-args.runs :])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
