"""The real `openai` Python client against the router (streaming and not)."""

from __future__ import annotations

import openai
import pytest
from routerhelpers import HOST, make_table


async def test_openai_client_completions_and_chat(mocks, start_router) -> None:
    backends = await mocks(2, chunks=5)
    r = await start_router(make_table([f"http://{HOST}:{m.port}" for m in backends]))
    client = openai.AsyncOpenAI(base_url=r.url + "/v1", api_key="unused", max_retries=0)
    try:
        models = await client.models.list()
        assert [m.id for m in models.data] == ["tiny"]

        completion = await client.completions.create(model="tiny", prompt="hi", max_tokens=8)
        assert completion.choices[0].finish_reason == "length"
        assert completion.usage is not None

        chat = await client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}]
        )
        assert chat.choices[0].message.content

        stream = await client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        pieces, finish, usage = [], None, None
        async for chunk in stream:
            if chunk.choices:
                pieces.append(chunk.choices[0].delta.content or "")
                finish = chunk.choices[0].finish_reason or finish
            if chunk.usage:
                usage = chunk.usage
        assert "".join(pieces) == " t0 t1 t2 t3 t4"
        assert finish == "length"
        assert usage is not None

        text_stream = await client.completions.create(model="tiny", prompt="hi", stream=True)
        texts = [c.choices[0].text async for c in text_stream if c.choices]
        assert len(texts) == 5
    finally:
        await client.close()


async def test_openai_client_sees_router_errors(mocks, start_router) -> None:
    (m,) = await mocks(1)
    r = await start_router(make_table([f"http://{HOST}:{m.port}"]))
    client = openai.AsyncOpenAI(base_url=r.url + "/v1", api_key="unused", max_retries=0)
    try:
        with pytest.raises(openai.NotFoundError) as info:
            await client.completions.create(model="gpt-4", prompt="hi")
        assert "gpt-4" in str(info.value)
        r.pool.backends["b0"].healthy = False
        with pytest.raises(openai.InternalServerError) as unavailable:
            await client.completions.create(model="tiny", prompt="hi")
        assert unavailable.value.status_code == 503
    finally:
        await client.close()
