"""Wall time of `kubectl kubeinfer gpus|preview|top --once|status` against a
running cluster (the local control plane or any other), as a user runs them:
a fresh process each time, so Python's start and the kubeconfig load count.

    eval $(.venv/bin/kubeinfer cluster env)      # or any KUBECONFIG
    .venv/bin/python bench/cli/latency.py --name demo --namespace team-a --runs 10

Prints the median and the worst of each command; not a pass/fail test.
"""

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent / "kubectl-kubeinfer"


def timed(args: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {done.stderr}")
    return elapsed


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
    print(f"{'command':<26} {'median s':>9} {'max s':>7}  ({args.runs} runs each)")
    for label, command in commands.items():
        times = [timed(command) for _ in range(args.runs)]
        print(f"{label:<26} {statistics.median(times):>9.2f} {max(times):>7.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
