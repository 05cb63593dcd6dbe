"""Start real vLLM (CPU) on loopback with the tiny model, wait for it, stop it.

Used by the tests against real vLLM, the fixture recorder and the
benchmarks; the worker agent starts vLLM its own way (launcher.py), with
`cpu_engine_env` below as what the local cluster adds for it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kubeinfer.localcluster.ports import free_port
from kubeinfer.localcluster.realvllm.env import VllmEnv

SERVED_NAME = "tiny"
MAX_MODEL_LEN = 512
# A cold start of the tiny model is ~35 s on 2 busy cores; leave margin.
READY_DEADLINE_S = 420.0
# GiB of KV cache for vLLM's CPU backend; the tiny model needs very little.
KV_CACHE_GIB = "1"


def cpu_engine_env(env: VllmEnv, base: Mapping[str, str]) -> dict[str, str]:
    """The environment for vLLM's CPU backend from this virtualenv, offline."""
    out = dict(base)
    out["PATH"] = f"{env.bin_dir}{os.pathsep}{base.get('PATH', '/usr/bin:/bin')}"
    out.setdefault("VLLM_CPU_KVCACHE_SPACE", KV_CACHE_GIB)
    out.setdefault("VLLM_TARGET_DEVICE", "cpu")
    out.setdefault("VLLM_NO_USAGE_STATS", "1")
    out.setdefault("DO_NOT_TRACK", "1")
    out.setdefault("HF_HUB_OFFLINE", "1")
    out.setdefault("TRANSFORMERS_OFFLINE", "1")
    # Two cores: one OpenMP thread each for the engine, no oversubscription.
    out.setdefault("OMP_NUM_THREADS", "1")
    # vLLM's engine core is a multiprocessing "spawn" child, started with
    # `python -c`, which puts the working directory first on sys.path: from
    # the repository root our operator/ folder would shadow the stdlib.
    out.setdefault("PYTHONSAFEPATH", "1")
    return out


def tiny_model_args(model: Path) -> list[str]:
    """`vllm serve` arguments for the tiny model (without host and port)."""
    return [
        str(model),
        "--served-model-name",
        SERVED_NAME,
        "--max-model-len",
        str(MAX_MODEL_LEN),
        "--dtype",
        "float32",
        "--max-num-seqs",
        "16",
        # On the CPU backend torch.compile builds C++ kernels with gcc: a
        # minute or more of both cores per start, which tests don't need.
        "--enforce-eager",
    ]


@dataclass
class VllmServer:
    """One `vllm serve` process in a session of its own (so its whole tree can be signalled)."""

    process: subprocess.Popen[bytes]
    host: str
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @classmethod
    def start(
        cls,
        env: VllmEnv,
        model: Path,
        log: Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        extra_args: Sequence[str] = (),
    ) -> VllmServer:
        port = port or free_port(host)
        command = [str(env.vllm), "serve", *tiny_model_args(model)]
        command += ["--host", host, "--port", str(port), *extra_args]
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            process = subprocess.Popen(
                command,
                env=cpu_engine_env(env, os.environ),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=log.parent,
                start_new_session=True,
            )
        return cls(process, host, port, log)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=5) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def wait_ready(self, deadline_s: float = READY_DEADLINE_S) -> None:
        """Poll /health until it answers 200. Raises RuntimeError with the log's tail."""
        deadline = time.monotonic() + deadline_s
        while not self.healthy():
            if self.process.poll() is not None:
                raise RuntimeError(f"vLLM exited ({self.process.returncode}):\n{self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"vLLM not ready after {deadline_s:.0f} s:\n{self.tail()}")
            time.sleep(0.25)

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM the whole tree, SIGKILL what is left after `grace_s`."""
        if self.process.poll() is None:
            self.signal_group(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(grace_s)
        self.signal_group(signal.SIGKILL)
        if self.process.poll() is None:
            self.process.wait(10)
