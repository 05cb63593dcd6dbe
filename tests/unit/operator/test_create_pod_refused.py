"""A refused pod create while another reconcile ran (found by the chaos suite).

Two reconciles of one InferenceService can overlap: one sends a create,
the other sees a pod of the same (deterministic) name, an older one being
deleted, and drops the create from `unseen_creates`. When the create is
then refused (403 while the namespace terminates, or while a restarted API
server's RBAC cache fills), the refusal must reach the handler as itself,
not as a KeyError that stops the daemon for 60 s. The API server is the
edge here: a small aiohttp app answers the create.
"""

from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from kubeinfer.operator.builders.common import Images
from kubeinfer.operator.kube import KubeClient
from kubeinfer.operator.reconciler import OperatorContext, _create_pod
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

KEY = ("ns", "llm-abc-0-x")
POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"namespace": KEY[0], "name": KEY[1]},
    "spec": {"containers": []},
}


async def test_a_refused_create_is_the_refusal_even_when_the_key_went_meanwhile(
    aiohttp_server: Any, images: Images
) -> None:
    contexts: list[OperatorContext] = []

    async def refuse(request: web.Request) -> web.Response:
        # The other reconcile saw the older pod of this name meanwhile.
        contexts[0].unseen_creates.pop(KEY, None)
        status = {"kind": "Status", "status": "Failure", "reason": "Forbidden", "code": 403}
        return web.json_response(status, status=403)

    app = web.Application()
    app.router.add_post(f"/api/v1/namespaces/{KEY[0]}/pods", refuse)
    server: TestServer = await aiohttp_server(app)
    configuration = client.Configuration(host=str(server.make_url("")).rstrip("/"))
    async with aiohttp.ClientSession() as http:
        kube = KubeClient(client.ApiClient(configuration=configuration))
        try:
            contexts.append(OperatorContext(kube=kube, http=http, images=images))
            with pytest.raises(ApiException) as refused:
                await _create_pod(contexts[0], POD, now=100.0)
        finally:
            await kube.close()
    assert refused.value.status == 403
    assert KEY not in contexts[0].unseen_creates
