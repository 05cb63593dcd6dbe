"""Per-replica GPU facts and the GPU fault record in status, decided by the
real planner (scenarios on the SimWorld stand-in for the cluster)."""

import dataclasses

from debugdoc import document
from kubeinfer.operator.analysis import GpuFacts, parse_router_stats
from sim_world import SimWorld, base_spec

REPORT = GpuFacts(
    uuid="GPU-1111",
    name="NVIDIA H100",
    memory_mib=81559,
    memory_used_mib=70000,
    healthy=True,
    fault=None,
)


def _world(**spec: object) -> SimWorld:
    world = SimWorld(base_spec(replicas=1, **spec))
    world.reconcile()
    world.make_ready()
    world.reconcile()
    return world


def test_the_routers_report_fills_the_row_and_survives_a_reconcile_without_it() -> None:
    world = _world()
    (name,) = world.pods
    (row,) = world.status["replicaStatuses"]
    assert row["gpuHealth"] == "Unknown"
    assert "gpuUuid" not in row
    world.gpus = {name: REPORT}
    world.reconcile()
    (row,) = world.status["replicaStatuses"]
    assert (row["gpuUuid"], row["gpuMemoryMiB"], row["gpuMemoryUsedMiB"]) == (
        "GPU-1111",
        81559,
        70000,
    )
    assert row["gpuHealth"] == "Healthy"
    world.gpus = {}  # stats are not read at every reconcile
    world.reconcile()
    (row,) = world.status["replicaStatuses"]
    assert (row["gpuUuid"], row["gpuHealth"]) == ("GPU-1111", "Healthy")


def test_a_fault_the_agent_reports_marks_the_row_faulted() -> None:
    world = _world()
    (name,) = world.pods
    world.gpus = {name: dataclasses.replace(REPORT, healthy=False, fault="GPU ECC: 3 errors")}
    world.reconcile()
    (row,) = world.status["replicaStatuses"]
    assert (row["gpuHealth"], row["gpuFault"]) == ("Faulted", "GPU ECC: 3 errors")


def test_a_gpu_fault_replaces_the_pod_and_is_recorded_with_node_and_gpu() -> None:
    world = _world()
    (name,) = world.pods
    world.gpus = {name: REPORT}
    world.reconcile()
    pod = world.pods[name]
    world.pods[name] = dataclasses.replace(
        pod, phase="Failed", ready=False, termination_message="GPU lost: Xid 79", exit_code=4
    )
    plan = world.reconcile()
    assert [d.name for d in plan.delete] == [name]
    (fault,) = world.status["gpuFaults"]
    assert fault["pod"] == name
    assert fault["node"] == pod.node
    assert fault["gpuUuid"] == "GPU-1111"
    assert fault["reason"] == "GPU lost: Xid 79"
    world.reconcile()
    assert len(world.status["gpuFaults"]) == 1  # recorded once
    assert [r["pod"] for r in world.status["replicaStatuses"]] != [name]


def test_cpu_workers_have_no_gpu_columns() -> None:
    world = _world(gpu={"count": 0}, worker={"resources": {"cpu": "4", "memory": "16Gi"}})
    (row,) = world.status["replicaStatuses"]
    assert "gpuHealth" not in row


def test_router_documents_carry_the_gpu_report() -> None:
    doc = document(
        {
            "name": "p0",
            "inFlight": 1,
            "gpu": {
                "uuid": "GPU-9",
                "memoryTotalBytes": 4 * 2**30,
                "memoryUsedBytes": 2**30,
                "healthy": False,
                "fault": "GPU lost",
            },
        },
        {"name": "p1", "inFlight": 0, "gpu": None},
    )
    stats = parse_router_stats([doc])
    assert stats.gpus["p0"] == GpuFacts("GPU-9", None, 4096, 1024, False, "GPU lost")
    assert "p1" not in stats.gpus
