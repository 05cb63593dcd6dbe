#!/usr/bin/env python3
"""Operator benchmark on the local control plane (real kube-apiserver,
scheduler and controller-manager; KWOK nodes with 8 simulated GPUs each).

    .venv/bin/python bench/operator/run.py            # about 5 minutes
    .venv/bin/python bench/operator/run.py --quick    # about 2 minutes

It starts its own cluster in a temporary folder, runs `kubeinfer-operator`
as a real process with its least-privilege ServiceAccount, pinned to CPU 0
(`taskset -c 0`), and stops and removes everything at the end (also on
Ctrl-C; the cluster's processes die with this one).

What is measured (docs/benchmarks.md has the latest figures):

1. apply → pods: one InferenceService with 8 replicas applied to an idle
   operator; time until its worker pods are created, Ready (KWOK makes
   them Ready once scheduled) and until condition Ready on the object.
2. failure → replacement: a worker pod fails (GPU fault in its
   termination message, eviction, or force-deleted); time from the
   failure event reaching a watch to the replacement pod reaching it
   (target: < 2 s), and until the replacement is Ready.
3. scale: 100 InferenceServices x 8 replicas applied at once; time until
   all 800 pods exist and are Ready, the operator's CPU seconds for that
   ramp, its steady CPU % afterwards, its RSS (from /proc/PID), the API
   calls made, and failure → replacement with all of it running.

Worker pods use an image outside ghcr.io/kubeinfer/*, so the local runtime
starts no process for them, and no routers (routerReplicas 0).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from apiclient import Api
from cluster import (
    GPUS_PER_NODE,
    create_namespace,
    install_operator_identity,
    start_cluster,
)
from kubeinfer.localcluster import controlplane
from kubeinfer.localcluster.failures import admin_client
from kubeinfer.localcluster.operatorproc import OperatorProcess
from kubeinfer.localcluster.ports import free_port
from kubeinfer.localcluster.state import ClusterState
from procstat import Sampler
from profiling import PySpy, summarise
from report import print_report
from scenarios import (
    FAILURE_KINDS,
    apply_and_wait,
    delete_service,
    fail_and_wait,
    scale_run,
    watching,
)

OPERATOR_CPU = "0"
BENCH_CPU = 1
LATENCY_NAMESPACE = "bench-latency"
FAILURE_FIELDS = ("seen_to_created_s", "written_to_created_s", "created_to_ready_s", "old_gone_s")
SCALE_NAMESPACE = "bench-scale"


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="apply → pods runs")
    parser.add_argument("--replicas", type=int, default=8)
    parser.add_argument("--trials", type=int, default=2, help="failures per kind per run")
    parser.add_argument("--failure-kinds", default=",".join(FAILURE_KINDS))
    parser.add_argument("--services", type=int, default=100, help="InferenceServices at scale")
    parser.add_argument("--steady-seconds", type=float, default=60.0)
    parser.add_argument("--settle-seconds", type=float, default=10.0)
    parser.add_argument("--scale-failures", type=int, default=3)
    parser.add_argument("--scale-timeout", type=float, default=600.0)
    parser.add_argument(
        "--resync-seconds", type=float, default=None, help="operator flag (default: its own)"
    )
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--quick", action="store_true", help="fewer runs, 20 services, 15 s")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--keep-logs", type=Path, help="copy the operator logs here")
    parser.add_argument(
        "--py-spy", type=Path, help="py-spy binary: profile the operator at scale (ramp, steady)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.trials, args.services = 2, 1, 20
        args.steady_seconds, args.settle_seconds, args.scale_failures = 15.0, 5.0, 2
    return args


def _median(values: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


async def latency_runs(
    args: argparse.Namespace, api: Api, kubeconfig: Path, logs: Path
) -> dict[str, Any]:
    kinds = [k for k in args.failure_kinds.split(",") if k]
    operator = OperatorProcess(
        kubeconfig,
        logs / "operator-latency.log",
        cpu=OPERATOR_CPU,
        health_port=free_port(),
        metrics_port=free_port(),
        resync_seconds=args.resync_seconds,
    )
    operator.start()
    applies, failures = [], []
    try:
        async with watching(api, LATENCY_NAMESPACE) as observer:
            for run in range(args.runs):
                name = f"lat-{run}"
                applied = await apply_and_wait(
                    api, observer, LATENCY_NAMESPACE, name, args.replicas, limit_s=120
                )
                log(f"run {run}: apply → {args.replicas} pods {applied.all_created_s:.2f} s")
                applies.append(applied)
                used: set[str] = set()
                for kind in kinds:
                    for _ in range(args.trials):
                        result = await fail_and_wait(
                            api, observer, LATENCY_NAMESPACE, name, kind, args.replicas, used, 60
                        )
                        log(f"run {run}: {kind} → replacement {result.seen_to_created_s:.3f} s")
                        failures.append(result)
                await delete_service(api, observer, LATENCY_NAMESPACE, name, limit_s=120)
    finally:
        operator.stop()
    by_kind = {
        kind: {
            field: _median([getattr(f, field) for f in failures if f.kind == kind])
            for field in FAILURE_FIELDS
        }
        for kind in kinds
    }
    return {
        "apply": {
            field: _median([getattr(a, field) for a in applies])
            for field in ("first_pod_s", "all_created_s", "all_ready_s", "service_ready_s")
        },
        "failures": by_kind,
        "raw": {"apply": [asdict(a) for a in applies], "failures": [asdict(f) for f in failures]},
        "operator_log": operator.log_counts(),
    }


async def scale(
    args: argparse.Namespace, api: Api, state: ClusterState, kubeconfig: Path, logs: Path
) -> dict[str, Any]:
    operator = OperatorProcess(
        kubeconfig,
        logs / "operator-scale.log",
        cpu=OPERATOR_CPU,
        health_port=free_port(),
        metrics_port=free_port(),
        resync_seconds=args.resync_seconds,
    )
    operator.start()
    sampler = Sampler(operator.pid)
    sampling = asyncio.create_task(sampler.run())
    profiler = PySpy(args.py_spy, operator.pid, logs) if args.py_spy else None

    def phase(name: str) -> None:
        if profiler is None:
            return
        if name == "done":
            profiler.stop()
        else:
            profiler.start(name)

    try:
        async with watching(api, SCALE_NAMESPACE) as observer:
            result = await scale_run(
                api,
                observer,
                sampler,
                lambda: asyncio.to_thread(operator.metrics),
                {component.name: component.pid for component in state.components},
                SCALE_NAMESPACE,
                services=args.services,
                replicas=args.replicas,
                steady_seconds=args.steady_seconds,
                settle_seconds=args.settle_seconds,
                failures=args.scale_failures,
                limit_s=args.scale_timeout,
                phase=phase,
            )
        result["rss_peak_mib"] = max(result["rss_peak_mib"], sampler.now().hwm_mib)
    finally:
        sampling.cancel()
        if profiler is not None:
            profiler.stop()
        operator.stop()
    result["operator_log"] = operator.log_counts()
    if profiler is not None:
        result["profile"] = {
            name: asdict(summarise(path))
            for name, path in profiler.outputs.items()
            if path.exists()
        }
    return result


async def run_all(
    args: argparse.Namespace, state: ClusterState, kubeconfig: Path, logs: Path
) -> dict[str, Any]:
    api = Api(state.server, Path(state.root) / "pki")
    kube = admin_client(Path(state.root))
    results: dict[str, Any] = {}
    try:
        if not args.skip_latency:
            create_namespace(kube, LATENCY_NAMESPACE)
            results["latency"] = await latency_runs(args, api, kubeconfig, logs)
        if not args.skip_scale:
            create_namespace(kube, SCALE_NAMESPACE)
            log(f"scale: {args.services} InferenceServices x {args.replicas} replicas")
            results["scale"] = await scale(args, api, state, kubeconfig, logs)
    finally:
        await api.close()
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="kubeinfer-bench-operator-"))
    cluster_dir = root / "cluster"
    gpus = max(args.services * args.replicas if not args.skip_scale else 0, args.replicas)
    nodes = math.ceil(gpus / GPUS_PER_NODE) + 2  # headroom for replacements
    state = None
    started = time.monotonic()
    results: dict[str, Any] = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": {"cpus": os.cpu_count(), "loadavg_start": os.getloadavg()},
    }
    try:
        log(f"starting a cluster with {nodes} nodes x {GPUS_PER_NODE} GPUs in {cluster_dir}")
        state = start_cluster(cluster_dir, nodes, progress=log)
        atexit.register(controlplane.kill_all_groups, state)
        kubeconfig = install_operator_identity(state, root / "operator.kubeconfig")
        # The cluster's processes keep both cores; only this process moves,
        # off the operator's core.
        if (os.cpu_count() or 1) > 1:
            os.sched_setaffinity(0, {BENCH_CPU})
        results |= asyncio.run(run_all(args, state, kubeconfig, root))
        if args.keep_logs:
            args.keep_logs.mkdir(parents=True, exist_ok=True)
            for path in root.glob("operator-*"):
                shutil.copy(path, args.keep_logs / path.name)
    finally:
        results["machine"]["loadavg_end"] = os.getloadavg()
        results["elapsed_s"] = time.monotonic() - started
        if state is not None:
            controlplane.down(cluster_dir, progress=log)
            atexit.unregister(controlplane.kill_all_groups)
        shutil.rmtree(root, ignore_errors=True)
    print_report(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
