"""Measure drain strategies on real vLLM: requests lost and drain time.

    .venv/bin/python bench/vllm/drain.py [strategy ...] [--rounds N]

Each strategy is a worker (agent + vLLM CPU + the tiny model) under load
(8 streaming + 8 non-streaming clients, 48 tokens each, one request after
another); SIGTERM goes to the agent while the clients keep sending for
LATE_SENDING_S more (a router that has not yet seen /ready turn 503).
Prints one line per round. docs/worker.md (Drain) has the results.
"""

import argparse
import signal
import sys
import tempfile
import time
from pathlib import Path

from kubeinfer.localcluster.realvllm.env import ensure_tiny_model, ensure_vllm_env

# The real-vLLM worker helpers of the tests (start, load, failure counting).
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "vllm"))
from vllm_worker import Load, failures, start_vllm_worker, wait_for

LATE_SENDING_S = 1.0
STRATEGIES = {
    # vLLM drains by itself: the agent sends SIGTERM at once.
    "vllm": {
        "args": ("--drain-seconds", "0", "--engine-stop-seconds", "60"),
        "extra": ("--shutdown-timeout", "30"),
    },
    # The agent drains (its in-flight accounting), then SIGTERM.
    "agent": {"args": ("--drain-seconds", "30"), "extra": ()},
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("strategies", nargs="*", default=list(STRATEGIES))
    parser.add_argument("--rounds", type=int, default=1)
    options = parser.parse_args()
    env = ensure_vllm_env(print)
    model = ensure_tiny_model(env, print)
    root = Path(tempfile.mkdtemp(prefix="drain-bench-"))
    runs = [(name, n) for n in range(options.rounds) for name in options.strategies]
    workers = {
        run: start_vllm_worker(
            env,
            model,
            root / f"{run[0]}-{run[1]}",
            args=STRATEGIES[run[0]]["args"],
            extra_args=STRATEGIES[run[0]]["extra"],
        )
        for run in runs
    }
    try:
        for worker in workers.values():
            worker.wait_ready()
        for (name, n), worker in workers.items():
            load = Load(worker.port).start()
            wait_for(lambda load=load: load.count() >= 16, 120, "some requests to finish")
            sent_before = load.count()
            started = time.monotonic()
            worker.process.send_signal(signal.SIGTERM)
            time.sleep(LATE_SENDING_S)  # the late clients: the point of the measurement
            load.stop_sending()
            outcomes = load.finish(120)
            code = worker.wait_exit(120)
            drain = time.monotonic() - started
            lost = failures(outcomes)
            kinds = sorted({o.error or f"finish={o.finish_reason} done={o.done}" for o in lost})
            print(
                f"{name} round {n}: {len(lost)} of {len(outcomes) - sent_before} requests "
                f"around SIGTERM lost, exit {code} after {drain:.1f} s; "
                f"message {worker.termination_message()!r}; {kinds[:3]}",
                flush=True,
            )
    finally:
        for worker in workers.values():
            worker.kill()
    print(f"logs in {root}")


if __name__ == "__main__":
    main()
