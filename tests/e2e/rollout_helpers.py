"""Helpers of the rollout e2e tests (test_e2e_rollouts.py, test_e2e_operator_ha.py)."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from kubeinfer.localcluster.client import KubeClient
from kubeinfer.localcluster.operatorproc import get_isvc, simulated_service
from kubeinfer.localcluster.waiting import async_wait_for


def service(name: str, replicas: int = 2, **simulator: Any) -> dict[str, Any]:
    return simulated_service(
        name,
        replicas,
        routing={"retries": 3},
        rollout={"stepIntervalSeconds": 3, "analysis": {"minRequests": 10, "maxErrorRate": 0.05}},
        worker={"simulator": simulator, "drainSeconds": 5},
    )


async def until(check: Callable[[], Any], within: float, what: str) -> Any:
    async def probe() -> Any:
        return await asyncio.to_thread(check)

    poll: Callable[[], Awaitable[Any]] = probe
    return await async_wait_for(poll, within, interval=0.3, what=what)


def rollout_phase(kube: KubeClient, namespace: str, name: str) -> str:
    return str(get_isvc(kube, namespace, name)["status"]["rollout"]["phase"])
