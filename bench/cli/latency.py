"""Wall time of `kubectl kubeinfer gpus|preview|top --once|status` against a
running cluster (the local control plane or any other), as a user runs them:
a fresh process each time, so Python's start and the kubeconfig load count.

    eval $(.venv/bin/kubeinfer cluster env)      # or any KUBECONFIG
    .venv/bin/python bench/cli/latency.py --name demo --namespace team-a --runs 10

Prints the median and the worst wall time and the median CPU time (user +
system: what the command itself costs, whatever else the machine runs) of
each command; not a pass/fail test.
"""

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent / "kubectl-kubeinfer"


def timed(args: list[str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="an InferenceService that exists")
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    ns = ["-n", args.namespace]
    commands = {
        "--help (start-up only)": ["--help"],
        "gpus": ["gpus", *ns],
        "preview --from-cluster": ["preview", "--from-cluster", args.name, *ns],
        "top --once": ["top", args.name, "--once", *ns],
        "status": ["status", args.name, *ns],
    }
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(
        f"{'command':<26} {'wall median s':>14} {'wall max s':>11} {'CPU median s':>13}"
        f"  ({args.runs} runs each)"
    )
    for label, command in commands.items():
        runs = [timed(command) for _ in range(args.runs)]
        wall = [w for w, _ in runs]
        cpu = [c for _, c in runs]
        print(
            f"{label:<26} {statistics.median(wall):>14.2f} {max(wall):>11.2f} "
            f"{statistics.median(cpu):>13.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
