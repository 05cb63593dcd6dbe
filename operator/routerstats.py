"""Reading the routers' per-revision stats (GET /debug/backends on each router pod)."""

import asyncio
import logging

import aiohttp
from kubeinfer.operator.analysis import RouterStats, parse_router_stats
from kubeinfer.operator.api.constants import ROUTER_HTTP_PORT
from kubeinfer.operator.api.debugbackends import DebugBackends
from pydantic import ValidationError

logger = logging.getLogger(__name__)
TIMEOUT = aiohttp.ClientTimeout(total=1.0)


async def _fetch(session: aiohttp.ClientSession, ip: str) -> DebugBackends | None:
    url = f"http://{ip}:{ROUTER_HTTP_PORT}/debug/backends"
    try:
        async with session.get(url, timeout=TIMEOUT) as response:
            if response.status != 200:
                logger.warning("router %s answered %s", url, response.status)
                return None
            body = await response.read()
        return DebugBackends.model_validate_json(body)
    except ValidationError as error:
        # Another version of the router (mid-upgrade): judge on the others.
        logger.warning("router %s: unreadable /debug/backends: %s", url, error)
        return None
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
