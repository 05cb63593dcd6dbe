"""Operator leader election: how long a standby takes to take over.

Two `kubeinfer-operator --leader-elect` processes (the chart's RBAC and
default timings) on the local cluster, one InferenceService (2 simulated
workers). Then, --rounds times each:

- crash: SIGKILL the leader; time until the standby holds the Lease, and
  until it has completed a reconcile (its reconciles_total > 0);
- graceful: SIGTERM the leader; time until the standby holds the Lease,
  from the signal and from the old leader's exit.

The killed or stopped operator is started again (a standby) before the next
round. Nothing is pass/fail; prints a table and, with --json, the raw
numbers. About 15 s per crash round and 6 s per graceful round.

    .venv/bin/python bench/ha/takeover.py --rounds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from kubeinfer.localcluster import controlplane
from kubeinfer.localcluster.build import ensure_all
from kubeinfer.localcluster.client import KubeClient
from kubeinfer.localcluster.failures import admin_client
from kubeinfer.localcluster.operatorproc import (
    OperatorProcess,
    apply_isvc,
    install_operator_identity,
    lease_holder,
    simulated_service,
    wait_condition,
)
from kubeinfer.localcluster.state import ClusterState
from kubeinfer.localcluster.waiting import wait_for
from kubeinfer.operator.lease import LeaseTimings

RECONCILES_OK = ("kubeinfer_operator_reconciles_total", '{result="ok"}')


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def roles(kube: KubeClient, pair: list[OperatorProcess]) -> tuple[OperatorProcess, OperatorProcess]:
    def find() -> tuple[OperatorProcess, OperatorProcess] | None:
        holder = lease_holder(kube)
        for n, process in enumerate(pair):
            if process.running and process.health()[1]["identity"] == holder:
                return process, pair[1 - n]
        return None

    return wait_for(find, 60, interval=0.1, what="a leader")


def crash_round(kube: KubeClient, pair: list[OperatorProcess]) -> dict[str, float]:
    leader, standby = roles(kube, pair)
    heir = standby.health()[1]["identity"]
    killed = time.monotonic()
    leader.kill()
    wait_for(lambda: lease_holder(kube) == heir, 60, interval=0.05, what="the takeover")
    held = time.monotonic() - killed
    wait_for(lambda: standby.metric(*RECONCILES_OK) > 0, 60, interval=0.05, what="a reconcile")
    reconciled = time.monotonic() - killed
    leader.start()
    return {"lease": held, "reconcile": reconciled}


def graceful_round(kube: KubeClient, pair: list[OperatorProcess]) -> dict[str, float]:
    leader, standby = roles(kube, pair)
    heir = standby.health()[1]["identity"]
    sent = time.monotonic()
    assert leader.process is not None
    leader.process.terminate()
    wait_for(lambda: lease_holder(kube) == heir, 60, interval=0.05, what="the hand-over")
    held = time.monotonic()
    leader.process.wait(30)
    exited = time.monotonic()
    leader.start()
    return {"lease": held - sent, "after_exit": held - exited}


def row(name: str, values: list[float]) -> str:
    return (
        f"| {name} | {min(values):.1f} | {statistics.median(values):.1f} | "
        f"{max(values):.1f} | {len(values)} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cluster-dir", help="a running cluster (kubeinfer cluster up --dir)")
    parser.add_argument("--json", help="write the raw numbers here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kubeinfer-bench-ha-"))
    if args.cluster_dir:
        root = Path(args.cluster_dir)
        started = False
    else:
        ensure_all(log)
        root = work / "cluster"
        controlplane.up(root, progress=log, tie_to_parent=True)
        started = True
    state = ClusterState.load(root / "cluster.json")
    assert state is not None, f"no cluster in {root}"
    kube = admin_client(root)
    pair: list[OperatorProcess] = []
    try:
        kubeconfig = install_operator_identity(kube, state, work / "kubeconfig")
        pair = [
            OperatorProcess(kubeconfig, work / f"operator-{n}.log", leader_elect=True) for n in "ab"
        ]
        for process in pair:
            process.start()
        namespace = f"bench-ha-{int(time.time())}"
        kube.create("/api/v1/namespaces", {"metadata": {"name": namespace}})
        wait_for(
            lambda: kube.exists(f"/api/v1/namespaces/{namespace}/serviceaccounts/default"),
            30,
            what="the default ServiceAccount",
        )
        apply_isvc(kube, namespace, simulated_service("bench", replicas=2))
        wait_condition(kube, namespace, "bench", "Ready", timeout=120)
        crashes, graceful = [], []
        for n in range(args.rounds):
            crashes.append(crash_round(kube, pair))
            log(f"crash {n + 1}: {crashes[-1]}")
        for n in range(args.rounds):
            graceful.append(graceful_round(kube, pair))
            log(f"graceful {n + 1}: {graceful[-1]}")
        timings = LeaseTimings()
        print(
            f"\nLease {timings.lease_duration:g} s, renew deadline {timings.renew_deadline:g} s, "
            f"retry {timings.retry_period:g} s (worst case to hold the Lease after a crash: "
            f"{timings.worst_takeover_seconds():.1f} s)\n"
        )
        print("| seconds | min | median | max | rounds |")
        print("| --- | --- | --- | --- | --- |")
        print(row("SIGKILL -> standby holds the Lease", [r["lease"] for r in crashes]))
        print(row("SIGKILL -> standby reconciled", [r["reconcile"] for r in crashes]))
        print(row("SIGTERM -> standby holds the Lease", [r["lease"] for r in graceful]))
        print(row("old leader's exit -> standby holds it", [r["after_exit"] for r in graceful]))
        if args.json:
            Path(args.json).write_text(json.dumps({"crash": crashes, "graceful": graceful}))
        kube.delete(f"/api/v1/namespaces/{namespace}")
    finally:
        for process in pair:
            process.stop()
        if started:
            controlplane.down(root, progress=log)


if __name__ == "__main__":
    main()
