"""`kubectl kubeinfer gpus`: every GPU node, who holds its GPUs, and their health.

Reads only: nodes, pods (all namespaces: any pod may hold a GPU) and
InferenceServices, whose status carries each worker's GPU as reported.
"""

import argparse
from typing import Any

from kubeinfer.operator.api import constants as c
from kubeinfer.operator.clicommon import (
    connect,
    dump,
    global_flags,
    namespace_of,
    option,
    output_of,
    run_command,
    table,
)
from kubeinfer.operator.inventory import GpuNodeRow, build_inventory

MIB_PER_GIB = 1024


def _gib(mib: int | None) -> str:
    return "-" if mib is None else f"{mib / MIB_PER_GIB:.1f}Gi"


def render_inventory(rows: list[GpuNodeRow]) -> str:
    nodes = table(
        [
            "NODE",
            "READY",
            "PRODUCT",
            "MEMORY",
            "COMPUTE",
            "GPUS",
            "ALLOCATED",
            "KUBEINFER",
            "OTHER",
            "LAST FAULT",
        ],
        [
            [
                r.node,
                r.ready,
                r.product or "(no GPU feature discovery labels)",
                _gib(r.memory_mib),
                r.compute,
                r.count if r.count is not None else r.allocatable,
                f"{r.allocated}/{r.allocatable}",
                len(r.workers),
                r.other_pods,
                r.last_fault,
            ]
            for r in rows
        ],
    )
    workers = [(r.node, w) for r in rows for w in r.workers]
    if not workers:
        return nodes
    used = table(
        [
            "NODE",
            "NAMESPACE",
            "INFERENCESERVICE",
            "REVISION",
            "REPLICA",
            "POD",
            "GPU",
            "HEALTH",
            "MEMORY USED",
            "FAULT",
        ],
        [
            [
                node,
                w.namespace,
                w.service,
                w.revision,
                w.replica,
                w.pod,
                w.gpu_uuid,
                w.health,
                f"{_gib(w.memory_used_mib)}/{_gib(w.memory_mib)}" if w.memory_mib else None,
                w.fault,
            ]
            for node, w in workers
        ],
    )
    return nodes + "\n" + used


async def _gpus(args: argparse.Namespace) -> int:
    kube = await connect(args)
    try:
        nodes = (await kube.request("GET", "/api/v1/nodes"))["items"]
        pods = (await kube.request("GET", "/api/v1/pods"))["items"]
        if option(args, "all_namespaces") or option(args, "namespace") is None:
            isvc_path = f"/apis/{c.API_VERSION}/{c.PLURAL}"
        else:
            isvc_path = f"/apis/{c.API_VERSION}/namespaces/{namespace_of(args)}/{c.PLURAL}"
        isvcs = (await kube.request("GET", isvc_path))["items"]
    finally:
        await kube.close()
    rows = build_inventory(nodes, pods, isvcs)
    if option(args, "node"):
        rows = [r for r in rows if r.node == args.node]
    if output_of(args) == "table":
        print(render_inventory(rows), end="")
    else:
        data: list[dict[str, Any]] = [r.to_dict() for r in rows]
        print(dump({"nodes": data}, output_of(args)), end="")
    return 0


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    gpus = sub.add_parser(
        "gpus",
        parents=[global_flags()],
        help="GPU nodes: product, memory, allocation, the kubeinfer workers on them, health",
    )
    gpus.add_argument("--node", default=None, help="only this node")


def run(args: argparse.Namespace) -> int:
    return run_command(lambda: _gpus(args))
