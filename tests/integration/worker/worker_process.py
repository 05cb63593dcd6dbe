"""Real worker processes for the worker's integration tests.

`kubeinfer-worker --engine simulated` runs as its own process (with the
simulated engine as its child, as in a pod) on 127.0.0.1 with free ports.
Everything waits with deadlines; nothing sleeps blindly.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubeinfer.localcluster.ports import free_port

REPO = Path(__file__).parents[3]
FIXTURES = REPO / "tests" / "fixtures" / "vllm-0.32.0"
WORKER_BIN = Path(sys.executable).parent / "kubeinfer-worker"
HOST = "127.0.0.1"
START_DEADLINE_S = 30.0

TINY_MODEL = {"name": "tiny", "source": "org/tiny", "engineArgs": {"maxModelLen": 512}}
FAST = {"ttftMs": 1, "tpotMs": 1}


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


def http(url: str, body: Any = None, raw: bytes | None = None) -> tuple[int, bytes]:
    """(status, body) of a GET, or a POST of `body` as JSON (or of `raw` bytes).

    Connection errors raise OSError (urllib's URLError).
    """
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((HOST, port)) == 0


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    port: int
    agent_port: int
    termination_log: Path
    log: Path
    codes: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def agent_url(self) -> str:
        return f"http://{HOST}:{self.agent_port}"

    def ready(self) -> tuple[int, dict[str, Any]]:
        status, body = http(self.agent_url + "/ready")
        return status, json.loads(body)

    def is_ready(self) -> bool:
        try:
            return self.ready()[0] == 200
        except OSError:
            return False

    def wait_ready(self, timeout: float = START_DEADLINE_S) -> None:
        def ready_or_dead() -> bool:
            return self.is_ready() or self.process.poll() is not None

        wait_for(ready_or_dead, timeout, "the worker to become ready")
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
        return self.log.read_text(errors="replace")[-5000:]

    def engine_pid(self) -> int:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text()
        return int(children.split()[0])

    def faults(self, **update: Any) -> dict[str, Any]:
        status, body = http(self.agent_url + "/admin/faults", update)
        assert status == 200, body
        return dict(json.loads(body))

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


def start_worker_process(
    directory: Path,
    *,
    model: dict[str, Any] | None = None,
    simulator: dict[str, Any] | None = None,
    engine: str = "simulated",
    args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> Worker:
    directory.mkdir(parents=True, exist_ok=True)
    port, agent_port = free_port(), free_port()
    termination_log = directory / "termination-log"
    log = directory / "worker.log"
    command = [
        str(WORKER_BIN),
        "--engine",
        engine,
        "--model-spec",
        json.dumps(model or TINY_MODEL),
        "--simulator-spec",
        json.dumps(FAST if simulator is None else simulator),
        "--host",
        HOST,
        "--port",
        str(port),
        "--agent-port",
        str(agent_port),
        "--termination-log",
        str(termination_log),
        "--gpu-poll-seconds",
        "0.1",
        *args,
    ]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("KUBEINFER_")}
    environment.update(env or {})
    with log.open("wb") as out:
        # From the repository root on purpose: the engine child must not
        # import the `operator/` folder as the standard library's module.
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=environment, cwd=REPO,
            start_new_session=True,
        )  # fmt: skip
    return Worker(process, port, agent_port, termination_log, log)
