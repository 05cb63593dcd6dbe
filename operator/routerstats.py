"""Reading the routers' per-revision stats (GET /debug/backends on each router pod)."""

import asyncio
import logging
from typing import Any

import aiohttp
from kubeinfer.operator.analysis import RouterStats, parse_router_stats
from kubeinfer.operator.api.constants import ROUTER_HTTP_PORT

logger = logging.getLogger(__name__)
TIMEOUT = aiohttp.ClientTimeout(total=1.0)


async def _fetch(session: aiohttp.ClientSession, ip: str) -> dict[str, Any] | None:
    url = f"http://{ip}:{ROUTER_HTTP_PORT}/debug/backends"
    try:
        async with session.get(url, timeout=TIMEOUT) as response:
            if response.status != 200:
                logger.warning("router %s answered %s", url, response.status)
                return None
            body: dict[str, Any] = await response.json()
            return body
    except (aiohttp.ClientError, TimeoutError, ValueError) as error:
        # One router being away (restarting, not ready yet) must not stop
        # the rollout from judging on the others.
        logger.info("router %s unreachable: %s", url, error)
        return None


async def fetch_router_stats(session: aiohttp.ClientSession, ips: list[str]) -> RouterStats | None:
    """Stats of all reachable routers; None when none answered."""
    if not ips:
        return None
    documents = await asyncio.gather(*(_fetch(session, ip) for ip in ips))
    answered = [d for d in documents if d is not None]
    return parse_router_stats(answered) if answered else None
