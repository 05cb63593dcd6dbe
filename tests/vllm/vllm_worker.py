"""`kubeinfer-worker --engine vllm --device cpu` over real vLLM, and load to drain.

Like tests/integration/worker/worker_process.py, for the real engine: the
worker runs as its own process on 127.0.0.1 with free ports, finds
`vllm` on PATH (the cached virtualenv's bin first) and serves the tiny
model. Everything waits with deadlines; nothing sleeps blindly.
"""

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kubeinfer.localcluster.ports import free_port
from kubeinfer.localcluster.realvllm.env import VllmEnv
from kubeinfer.localcluster.realvllm.server import SERVED_NAME, cpu_engine_env

WORKER_BIN = Path(sys.executable).parent / "kubeinfer-worker"
HOST = "127.0.0.1"
# A cold vLLM start is 40-60 s on two busy cores; several start at once.
READY_DEADLINE_S = 300.0
NORMAL_FINISH = ("length", "stop")


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """(status, body) of a GET on loopback. Raises OSError when nothing answers."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def process_group(pgid: int) -> list[int]:
    """Pids of live (not zombie) processes in group `pgid`, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            # The command name is in parentheses and may contain spaces.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


@dataclass
class VllmWorker:
    process: subprocess.Popen[bytes]
    port: int
    agent_port: int
    termination_log: Path
    log: Path

    def ready_status(self) -> int:
        try:
            return get(self.agent_port, "/ready")[0]
        except OSError:
            return 0

    def wait_ready(self, timeout: float = READY_DEADLINE_S) -> None:
        def ready_or_dead() -> bool:
            return self.ready_status() == 200 or self.process.poll() is not None

        wait_for(ready_or_dead, timeout, f"the worker to become ready:\n{self.logs()}")
        assert self.process.poll() is None, f"worker exited early:\n{self.logs()}"

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"worker still running after {timeout} s:\n{self.logs()}"
            ) from None

    def termination_message(self) -> str | None:
        if not self.termination_log.exists():
            return None
        return self.termination_log.read_text().strip()

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def engine_pid(self) -> int:
        """The `vllm serve` process: the agent's child that runs vllm."""
        pid = self.process.pid
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            if any(b"vllm" in part for part in cmdline[:2]):
                return int(child)
        raise AssertionError(f"no vllm child of the agent {pid}")

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


def start_vllm_worker(
    env: VllmEnv,
    model: Path,
    directory: Path,
    *,
    args: Sequence[str] = (),
    extra_args: Sequence[str] = (),
) -> VllmWorker:
    directory.mkdir(parents=True, exist_ok=True)
    port, agent_port = free_port(), free_port()
    termination_log = directory / "termination-log"
    log = directory / "worker.log"
    spec = {
        "name": SERVED_NAME,
        "source": str(model),
        "engineArgs": {
            "maxModelLen": 512,
            "dtype": "float32",
            "maxNumSeqs": 16,
            "extraArgs": list(extra_args),
        },
    }
    command = [
        str(WORKER_BIN),
        "--engine", "vllm",
        "--device", "cpu",
        "--model-spec", json.dumps(spec),
        "--host", HOST,
        "--port", str(port),
        "--agent-port", str(agent_port),
        "--termination-log", str(termination_log),
        *args,
    ]  # fmt: skip
    environment = {k: v for k, v in os.environ.items() if not k.startswith("KUBEINFER_")}
    # No PYTHONSAFEPATH here: the agent must set it for vLLM by itself.
    environment = cpu_engine_env(env, environment)
    environment.pop("PYTHONSAFEPATH", None)
    with log.open("wb") as out:
        # From the repository root on purpose: vLLM's spawned engine core
        # must not import the `operator/` folder as the standard library's.
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=environment,
            cwd=Path(__file__).parents[2], start_new_session=True,
        )  # fmt: skip
    return VllmWorker(process, port, agent_port, termination_log, log)


@dataclass
class Outcome:
    """One client request: how it ended."""

    stream: bool
    status: int = 0
    error: str | None = None
    finish_reason: str | None = None
    done: bool = False  # a stream ended with data: [DONE]

    @property
    def ok(self) -> bool:
        if self.error is not None or self.status != 200:
            return False
        return self.finish_reason in NORMAL_FINISH and (self.done or not self.stream)


def complete(port: int, stream: bool, max_tokens: int, prompt: str) -> Outcome:
    """One /v1/completions request, read to the end."""
    outcome = Outcome(stream)
    body = {
        "model": SERVED_NAME,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "stream": stream,
    }
    conn = http.client.HTTPConnection(HOST, port, timeout=120)
    try:
        conn.request(
            "POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"}
        )
        response = conn.getresponse()
        outcome.status = response.status
        raw = response.read()
    except (OSError, http.client.HTTPException) as error:
        outcome.error = f"{type(error).__name__}: {error}"
        return outcome
    finally:
        conn.close()
    if outcome.status != 200:
        outcome.error = raw[:200].decode(errors="replace")
        return outcome
    if not stream:
        outcome.finish_reason = json.loads(raw)["choices"][0]["finish_reason"]
        return outcome
    events = [e for e in raw.split(b"\n\n") if e.startswith(b"data: ")]
    outcome.done = bool(events) and events[-1] == b"data: [DONE]"
    for event in events:
        if event != b"data: [DONE]":
            for choice in json.loads(event[6:]).get("choices", []):
                outcome.finish_reason = choice.get("finish_reason") or outcome.finish_reason
    return outcome


@dataclass
class Load:
    """`streams` streaming and `plain` non-streaming clients, each sending
    one request after another until stop_sending() (bounded: at most
    `limit` requests in all)."""

    port: int
    streams: int = 8
    plain: int = 8
    max_tokens: int = 48
    limit: int = 400
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _sent: int = 0

    def start(self) -> "Load":
        for index in range(self.streams + self.plain):
            thread = threading.Thread(
                target=self._client, args=(index, index < self.streams), daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def _client(self, index: int, stream: bool) -> None:
        while not self._stop.is_set():
            with self._lock:
                if self._sent >= self.limit:
                    return
                self._sent += 1
                number = self._sent
            outcome = complete(self.port, stream, self.max_tokens, f"client {index} asks {number}")
            with self._lock:
                self.outcomes.append(outcome)

    def stop_sending(self) -> None:
        self._stop.set()

    def finish(self, timeout: float) -> list[Outcome]:
        """Stop sending, wait for every request to end; all outcomes."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            assert not thread.is_alive(), "a client request did not end"
        return list(self.outcomes)

    def count(self) -> int:
        with self._lock:
            return len(self.outcomes)


def failures(outcomes: Sequence[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if not o.ok]
