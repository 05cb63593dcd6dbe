"""The agent's HTTP endpoints (port 8081).

GET  /ready          200 when the engine answers, the GPU is healthy and
                     the worker is not draining; 503 otherwise
GET  /live           200 while the agent runs (it exits on fatal faults)
GET  /gpu            the last NVML snapshot as JSON (404 without a GPU)
GET  /metrics        GPU (when there is one) and agent metrics, followed by the
                     engine's own (vLLM's vllm:* series): one scrape target per
                     worker, and Prometheus never needs the engine's API port
GET  /admin/faults   current fault settings (simulated engine only)
POST /admin/faults   change them (see docs/worker.md)
"""

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web
from kubeinfer.operator.api import Engine
from kubeinfer.worker.agent import Agent
from kubeinfer.worker.agentmetrics import agent_registry
from kubeinfer.worker.faults import FaultUpdate
from kubeinfer.worker.probe import EngineProbe
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import ValidationError

AGENT = web.AppKey("agent", Agent)
REGISTRY = web.AppKey("registry", CollectorRegistry)
ENGINE = web.AppKey("engine", EngineProbe)
# A scrape must not wait long for a stuck engine: Prometheus' default
# scrape timeout is 10 s, and the agent's own series matter most then.
ENGINE_METRICS_TIMEOUT_S = 3.0
# Fault bodies are tiny; anything bigger is a mistake.
MAX_ADMIN_BODY = 16 * 1024


def _compact(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=_compact)


def _error(status: int, message: str) -> web.Response:
    return _json({"error": {"message": message, "code": status}}, status)


async def ready(request: web.Request) -> web.Response:
    agent = request.app[AGENT]
    ok, why = agent.readiness()
    return _json({"ready": ok, "phase": agent.phase.value, "reason": why}, 200 if ok else 503)


async def live(request: web.Request) -> web.Response:
    agent = request.app[AGENT]
    return _json({"live": True, "phase": agent.phase.value})


async def gpu(request: web.Request) -> web.Response:
    agent = request.app[AGENT]
    snapshot = agent.last_snapshot
    if snapshot is None:
        return _error(404, "no GPU: this worker runs on CPU (--device cpu)")
    body = snapshot.to_json()
    body["ageSeconds"] = round(max(0.0, time.time() - snapshot.time), 3)
    body["healthy"] = agent.gpu_fault is None
    body["fault"] = agent.gpu_fault
    body["xidEvents"] = {str(xid): count for xid, count in sorted(agent.xid_counts.items())}
    body["simulated"] = agent.simulated_gpu is not None
    return _json(body)


def engine_metrics_up_text(up: bool) -> bytes:
    """The agent's own line about the engine's page, in the exposition format."""
    return (
        b"# HELP kubeinfer_worker_engine_metrics_up 1 when the engine's /metrics answered "
        b"this scrape (its series follow).\n"
        b"# TYPE kubeinfer_worker_engine_metrics_up gauge\n"
        b"kubeinfer_worker_engine_metrics_up " + (b"1" if up else b"0") + b"\n"
    )


async def metrics(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY]
    body = generate_latest(registry)
    engine = await request.app[ENGINE].metrics_text(ENGINE_METRICS_TIMEOUT_S)
    body += engine_metrics_up_text(engine is not None)
    if engine:
        # Both pages are Prometheus text with disjoint families (kubeinfer_*
        # here; vllm:*, python_*, process_* there), so they concatenate.
        body += engine if engine.endswith(b"\n") else engine + b"\n"
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def get_faults(request: web.Request) -> web.Response:
    agent = request.app[AGENT]
    if agent.config.engine is not Engine.SIMULATED:
        return _error(404, "fault injection exists only for the simulated engine")
    return _json(agent.engine_faults.model_dump(mode="json", by_alias=True))


async def post_faults(request: web.Request) -> web.Response:
    agent = request.app[AGENT]
    if agent.config.engine is not Engine.SIMULATED:
        return _error(404, "fault injection exists only for the simulated engine")
    if request.content_length is not None and request.content_length > MAX_ADMIN_BODY:
        return _error(413, f"body larger than {MAX_ADMIN_BODY} bytes")
    raw = await request.content.read(MAX_ADMIN_BODY + 1)
    if len(raw) > MAX_ADMIN_BODY:
        return _error(413, f"body larger than {MAX_ADMIN_BODY} bytes")
    try:
        update = FaultUpdate.model_validate_json(raw or b"{}")
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in error.errors()
        )
        return _error(400, problems)
    faults = agent.apply_faults(update)
    return _json(faults.model_dump(mode="json", by_alias=True))


def agent_app(agent: Agent) -> web.Application:
    app = web.Application(client_max_size=MAX_ADMIN_BODY)
    app[AGENT] = agent
    app[REGISTRY] = agent_registry(agent)

    async def engine_client(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as session:
            app[ENGINE] = EngineProbe(session, agent.config.probe_host, agent.config.port)
            yield

    app.cleanup_ctx.append(engine_client)
    app.router.add_get("/ready", ready)
    app.router.add_get("/live", live)
    app.router.add_get("/gpu", gpu)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/admin/faults", get_faults)
    app.router.add_post("/admin/faults", post_faults)
    return app
