"""``GET /v1/models``: vLLM's own answer, from a healthy worker.

Clients read ``max_model_len`` (and ``root``, ``owned_by``, ``permission``)
from it to size their prompts; only the worker knows them. So the router
passes the request (its API key header included) to an available worker
and passes the answer back. Only when no worker answers does the router
answer itself, with what it knows from the routing table (the model name),
so that a client can still list the model while every worker is away.
These requests are not inference attempts: they are not counted in the
per-backend stats and never eject a worker.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from kubeinfer.operator.api.routing import RoutingTable
from kubeinfer.router.proxy import response_headers
from kubeinfer.router.server import ClientConnection, Request
from kubeinfer.router.upstream import Exchange, UpstreamError

if TYPE_CHECKING:
    from kubeinfer.router.app import Router

# vLLM answers /v1/models from its API process at once, even under load; a
# worker slower than this is skipped for the next one.
MODELS_TIMEOUT_SECONDS = 5.0
# Workers asked before the router answers itself.
MODELS_ATTEMPTS = 2


async def proxy_models(r: Router, conn: ClientConnection, req: Request,
                       table: RoutingTable) -> None:
    """Answer with a worker's ``/v1/models``; the router's own list if none answers."""
    problem = "no healthy backend"
    for b in r.pool.metadata_backends()[:MODELS_ATTEMPTS]:
        head = (b"GET " + b.base_path + req.target + b" HTTP/1.1\r\n" + b.host_line
                + req.forward_headers + b"\r\n")
        ex: Exchange | None = None
        try:
            async with asyncio.timeout(MODELS_TIMEOUT_SECONDS):
                ex = await b.conns.send(head, b"", stream_mode=False,
                                        connect_timeout=table.connect_timeout_seconds,
                                        loop=r.loop)
        except UpstreamError as err:
            problem = f"{b.name}: {err.kind}"
            continue
        except TimeoutError:
            problem = f"{b.name}: timeout"
            continue
        if ex.status >= 500:
            problem = f"{b.name}: status {ex.status}"
            continue
        # The worker's answer, 4xx included (e.g. its own API key check).
        conn.respond_raw(ex.status, response_headers(ex, b), b"".join(ex.body))
        r.log_request(req, ex.status, None, backend=b.name)
        return
    conn.respond(200, r.models_body)
    r.log_request(req, 200, f"own answer: {problem}")
