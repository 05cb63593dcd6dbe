"""The router's HTTP surface, in process, against mock backends on 127.0.0.1:
proxying, streaming, the info endpoints, and every bad input."""

from __future__ import annotations

import asyncio
import collections
import json
import time

import aiohttp
import pytest
from kubeinfer.localcluster.waiting import async_wait_for
from prometheus_client.parser import text_string_to_metric_families
from routerhelpers import HOST, make_table

COMPLETION = {"model": "tiny", "prompt": "hello", "max_tokens": 8}
CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}


async def test_completion_is_proxied_with_the_backends_body(mocks, start_router, session) -> None:
    (m,) = await mocks(1)
    r = await start_router(make_table([f"http://{HOST}:{m.port}"]))
    async with session.post(r.url + "/v1/completions", json=COMPLETION) as resp:
        assert resp.status == 200
        assert resp.headers["x-kubeinfer-backend"] == "b0"
        assert resp.headers["content-type"] == "application/json"
        body = await resp.json()
    assert body["object"] == "text_completion"
    assert body["choices"][0]["finish_reason"] == "length"


async def test_round_robin_spreads_evenly(mocks, start_router, session) -> None:
    backends = await mocks(3)
    r = await start_router(make_table([f"http://{HOST}:{m.port}" for m in backends]))
    seen = []
    for _ in range(30):
        async with session.post(r.url + "/v1/chat/completions", json=CHAT) as resp:
            assert resp.status == 200
            seen.append(resp.headers["x-kubeinfer-backend"])
    assert collections.Counter(seen) == {"b0": 10, "b1": 10, "b2": 10}
    assert [m.state.requests for m in backends] == [10, 10, 10]


async def test_streaming_arrives_chunk_by_chunk(mocks, start_router, session) -> None:
    (m,) = await mocks(1, chunks=6, chunk_delay=0.1)
    r = await start_router(make_table([f"http://{HOST}:{m.port}"]))
    arrivals: list[tuple[float, bytes]] = []
    start = time.monotonic()
    async with session.post(r.url + "/v1/chat/completions", json={**CHAT, "stream": True}) as resp:
        assert resp.status == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        async for line in resp.content:
            if line.strip():
                arrivals.append((time.monotonic() - start, line))
    events = [line for _, line in arrivals]
    assert events[-1] == b"data: [DONE]\n"
    assert len(events) == 6 + 2  # content chunks, usage chunk, [DONE]
    # The first token reached the client long before the last one was
    # generated (6 chunks 0.1 s apart): nothing buffered the stream.
    assert arrivals[-1][0] - arrivals[0][0] > 0.4
    first = json.loads(events[0][len(b"data: ") :])
    assert first["object"] == "chat.completion.chunk"


async def test_models_health_and_readiness(mocks, start_router, session) -> None:
    (m,) = await mocks(1)
    r = await start_router(make_table([f"http://{HOST}:{m.port}"]))
    async with session.get(r.url + "/v1/models") as resp:
        models = await resp.json()
    assert [d["id"] for d in models["data"]] == ["tiny"]
    async with session.get(r.url + "/healthz") as resp:
        assert resp.status == 200
    async with session.get(r.url + "/readyz") as resp:
        assert resp.status == 200
        assert (await resp.json())["healthyBackends"] == 1
    r.pool.backends["b0"].healthy = False
    async with session.get(r.url + "/readyz") as resp:
        assert resp.status == 503
        assert (await resp.json())["reason"] == "no healthy backend"


async def test_not_ready_without_a_table(start_router, session) -> None:
    r = await start_router(None)
    async with session.get(r.url + "/readyz") as resp:
        assert resp.status == 503
    async with session.post(r.url + "/v1/completions", json=COMPLETION) as resp:
        assert resp.status == 503
        assert "routing table" in (await resp.json())["error"]["message"]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "param"),
    [
        ("POST", "/v1/completions", b'{"model": "tiny", "prompt": "x"', 400, None),
        ("POST", "/v1/completions", b"not json at all", 400, None),
        ("POST", "/v1/completions", b'["a list"]', 400, None),
        ("POST", "/v1/chat/completions", b'{"model": "tiny"}', 400, "messages"),
        ("POST", "/v1/completions", b'{"prompt": "x"}', 400, "model"),
        ("POST", "/v1/completions", b'{"model": "nope", "prompt": "x"}', 404, "model"),
        ("POST", "/v1/completions", b"x" * 5000, 413, None),
        ("POST", "/v1/embeddings", b"{}", 404, None),
        ("GET", "/v1/completions", b"", 405, None),
        ("POST", "/metrics", b"", 405, None),
        ("DELETE", "/v1/models", b"", 405, None),
        ("GET", "/nothing/here", b"", 404, None),
    ],
)
async def test_bad_requests_get_openai_style_errors(
    mocks, start_router, session, method, path, body, status, param
) -> None:
    (m,) = await mocks(1)
    r = await start_router(make_table([f"http://{HOST}:{m.port}"]), max_body_bytes=4096)
    async with session.request(
        method, r.url + path, data=body, headers={"content-type": "application/json"}
    ) as resp:
        assert resp.status == status
        err = (await resp.json())["error"]
    assert err["code"] == status
    assert err["message"]
    assert err["param"] == param
    assert m.state.requests == 0  # nothing bad reached the worker


async def test_oversized_chunked_upload_is_cut_off_with_413(mocks, start_router, session) -> None:
    (m,) = await mocks(1)
    r = await start_router(make_table([f"http://{HOST}:{m.port}"]), max_body_bytes=4096)

    async def body():  # no content-length: the limit is enforced while reading
        for _ in range(10):
            yield b"x" * 1000

    async with session.post(r.url + "/v1/completions", data=body()) as resp:
        assert resp.status == 413


async def test_malformed_http_gets_a_json_400(mocks, start_router) -> None:
    (m,) = await mocks(1)
    r = await start_router(make_table([f"http://{HOST}:{m.port}"]))
    reader, writer = await asyncio.open_connection(HOST, r.router.port)
    writer.write(b"THIS IS NOT HTTP\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert data.startswith(b"HTTP/1.1 400 ")
    assert b'"code":400' in data


async def test_pipelined_requests_are_answered_in_order(mocks, start_router) -> None:
    backends = await mocks(2)
    r = await start_router(make_table([f"http://{HOST}:{m.port}" for m in backends]))
    body = json.dumps(COMPLETION).encode()
    one = (
        b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(body), body)
    )
    reader, writer = await asyncio.open_connection(HOST, r.router.port)
    writer.write(one * 3 + b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert data.count(b"HTTP/1.1 200 OK") == 4
    order = [data.find(b"x-kubeinfer-backend: b0"), data.find(b"x-kubeinfer-backend: b1")]
    assert 0 < order[0] < order[1]
    assert data.rstrip().endswith(b'{"status":"ok"}')


async def test_expect_100_continue(mocks, start_router, session) -> None:
    (m,) = await mocks(1)
    r = await start_router(make_table([f"http://{HOST}:{m.port}"]))
    async with session.post(r.url + "/v1/completions", json=COMPLETION, expect100=True) as resp:
        assert resp.status == 200


async def test_no_healthy_backend_is_503(mocks, start_router, session) -> None:
    (m,) = await mocks(1)
    r = await start_router(make_table([f"http://{HOST}:{m.port}"]))
    r.pool.backends["b0"].healthy = False
    async with session.post(r.url + "/v1/completions", json=COMPLETION) as resp:
        assert resp.status == 503
        assert resp.headers["retry-after"] == "1"
        assert (await resp.json())["error"]["type"] == "ServiceUnavailableError"


async def test_draining_backends_get_no_new_requests(mocks, start_router, session) -> None:
    backends = await mocks(2)
    table = make_table(
        [f"http://{HOST}:{m.port}" for m in backends], backend_extra=[{"draining": True}, {}]
    )
    r = await start_router(table)
    for _ in range(6):
        async with session.post(r.url + "/v1/completions", json=COMPLETION) as resp:
            assert resp.headers["x-kubeinfer-backend"] == "b1"
    assert backends[0].state.requests == 0


async def test_session_affinity(mocks, start_router, session) -> None:
    backends = await mocks(4)
    r = await start_router(
        make_table([f"http://{HOST}:{m.port}" for m in backends], strategy="prefix-affinity")
    )
    chosen = collections.defaultdict(set)
    for i in range(40):
        sid = f"s{i % 8}"
        async with session.post(
            r.url + "/v1/completions", json=COMPLETION, headers={"x-session-id": sid}
        ) as resp:
            chosen[sid].add(resp.headers["x-kubeinfer-backend"])
    assert all(len(v) == 1 for v in chosen.values())
    assert len(set().union(*chosen.values())) > 1


async def test_canary_weights_split_exactly(mocks, start_router, session) -> None:
    backends = await mocks(4)
    r = await start_router(
        make_table(
            [f"http://{HOST}:{m.port}" for m in backends],
            revisions=["stable", "stable", "stable", "canary"],
            revisionWeights={"stable": 75, "canary": 25},
        )
    )
    for _ in range(100):
        async with session.post(r.url + "/v1/completions", json=COMPLETION) as resp:
            assert resp.status == 200
    doc = r.debug()
    assert doc["revisions"]["stable"]["requests"] == 75
    assert doc["revisions"]["canary"]["requests"] == 25
    assert [b["requests"] for b in doc["backends"]] == [25, 25, 25, 25]


async def test_debug_backends_and_metrics(mocks, start_router, session) -> None:
    backends = await mocks(2)
    r = await start_router(make_table([f"http://{HOST}:{m.port}" for m in backends], generation=7))
    for _ in range(10):
        async with session.post(r.url + "/v1/completions", json=COMPLETION) as resp:
            await resp.read()
    async with session.get(r.url + "/debug/backends") as resp:
        doc = await resp.json()
    assert doc["generation"] == 7
    assert doc["model"] == "tiny"
    assert [(b["name"], b["requests"], b["errors"], b["inFlight"]) for b in doc["backends"]] == [
        ("b0", 5, 0, 0),
        ("b1", 5, 0, 0),
    ]
    window = doc["revisions"]["r1"]["window"]
    assert window["requests"] == 10
    assert window["errorRate"] == 0.0
    assert 0 < window["p50LatencyMs"] <= window["p99LatencyMs"] < 1000
    assert window["p50TtftMs"] is not None
    assert doc["queue"] == {"length": 0, "capacity": 256}

    async def scraped() -> bool:
        return all(b["queueDepth"] == 0 for b in r.debug()["backends"])

    await async_wait_for(scraped, 5.0, what="queue depth scraped from the mocks' /metrics")

    async with session.get(r.url + "/metrics") as resp:
        text = await resp.text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    codes = {s.labels["code"]: s.value for s in families["kubeinfer_router_requests"].samples}
    assert codes == {"200": 10}
    assert families["kubeinfer_router_routing_table_generation"].samples[0].value == 7


async def test_access_log_has_one_json_line_per_request(mocks, start_router, session) -> None:
    (m,) = await mocks(1)
    r = await start_router(make_table([f"http://{HOST}:{m.port}"]))
    async with session.post(
        r.url + "/v1/completions", json=COMPLETION, headers={"x-request-id": "abc-1"}
    ) as resp:
        await resp.read()
    async with session.post(r.url + "/v1/completions", json={**COMPLETION, "model": "x"}) as resp:
        await resp.read()
    async with session.get(r.url + "/healthz") as resp:
        await resp.read()
    lines = r.access_lines()
    assert len(lines) == 2  # probes stay out of the log
    ok, missing = lines
    assert ok["status"] == 200
    assert ok["backend"] == "b0"
    assert ok["revision"] == "r1"
    assert ok["retries"] == 0
    assert ok["requestId"] == "abc-1"
    assert ok["latencyMs"] > 0
    assert ok["ttftMs"] is not None
    assert missing["status"] == 404


async def test_client_disconnect_cancels_the_upstream_request(mocks, start_router) -> None:
    (m,) = await mocks(1, delay=5.0)
    r = await start_router(make_table([f"http://{HOST}:{m.port}"]))
    async with aiohttp.ClientSession() as s:
        with pytest.raises(TimeoutError):
            await s.post(
                r.url + "/v1/completions", json=COMPLETION, timeout=aiohttp.ClientTimeout(total=0.3)
            )

    async def upstream_gone() -> bool:
        return m.state.running == 0 and r.pool.backends["b0"].in_flight == 0

    await async_wait_for(upstream_gone, 2.0, interval=0.02, what="upstream request cancelled")
    assert r.access_lines()[-1]["status"] == 499


async def test_request_timeout_is_504(mocks, start_router, session) -> None:
    (m,) = await mocks(1, delay=5.0)
    r = await start_router(
        make_table([f"http://{HOST}:{m.port}"], requestTimeoutSeconds=0.3, retries=0)
    )
    async with session.post(r.url + "/v1/completions", json=COMPLETION) as resp:
        assert resp.status == 504
        assert (await resp.json())["error"]["code"] == 504
    assert r.debug()["backends"][0]["errors"] == 1


async def test_api_key_is_required_when_configured(mocks, start_router, session) -> None:
    (m,) = await mocks(1)
    r = await start_router(make_table([f"http://{HOST}:{m.port}"]), api_key="s3cret")
    async with session.post(r.url + "/v1/completions", json=COMPLETION) as resp:
        assert resp.status == 401
        assert (await resp.json())["error"]["type"] == "AuthenticationError"
    async with session.get(r.url + "/v1/models", headers={"authorization": "Bearer wrong"}) as resp:
        assert resp.status == 401
    async with session.post(
        r.url + "/v1/completions", json=COMPLETION, headers={"authorization": "Bearer s3cret"}
    ) as resp:
        assert resp.status == 200
    for probe in ("/healthz", "/readyz", "/metrics"):  # kubelet and Prometheus have no key
        async with session.get(r.url + probe) as resp:
            assert resp.status == 200
    assert m.state.requests == 1


@pytest.mark.parametrize(
    ("raw", "answer"),
    [
        (b"\x00\xff\x10garbage\r\n\r\n", b"HTTP/1.1 400 "),
        (b"POST /v1/completions HTTP/1.1\r\nContent-Length: nope\r\n\r\n{}", b"HTTP/1.1 400 "),
        (
            b"POST /v1/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nxx\r\n",
            b"HTTP/1.1 400 ",
        ),
        (
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
            + b"X-Big: " + b"a" * 200_000 + b"\r\n\r\n",
            b"HTTP/1.1 431 ",
        ),
        # A body that never comes: the router waits for it (and answers nothing).
        (b'POST /v1/completions HTTP/1.1\r\nContent-Length: 100\r\n\r\n{"model":', b""),
        (b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", b"HTTP/1.1 404 "),
        # Complete (27 bytes) but not JSON.
        (
            b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 27\r\n\r\n"
            b'{"model":"tiny","messages":',
            b"HTTP/1.1 400 ",
        ),
    ],
)  # fmt: skip
async def test_the_router_survives_hostile_input(mocks, start_router, session, raw, answer) -> None:
    (m,) = await mocks(1)
    r = await start_router(make_table([f"http://{HOST}:{m.port}"]))
    reader, writer = await asyncio.open_connection(HOST, r.router.port)
    writer.write(raw)
    await writer.drain()
    try:
        data = await asyncio.wait_for(reader.read(65536), 2.0)
    except TimeoutError:
        data = b""  # waiting for the rest of a body that never comes
    writer.close()
    assert data[: len(answer)] == answer, data[:200]
    if answer:  # every refusal is OpenAI-style JSON
        assert b"\r\ncontent-type: application/json" in data.lower(), data[:200]
    else:
        assert data == b""
    async with session.post(r.url + "/v1/completions", json=COMPLETION) as resp:
        assert resp.status == 200  # and it still serves


async def test_https_backend_certificates_are_verified(start_router, session, tmp_path) -> None:
    import datetime
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    from kubeinfer.localcluster.mockbackend import MockConfig, serve

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "self-signed")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    (m,) = await serve(HOST, [0], MockConfig(), tls=ctx)
    try:
        r = await start_router(make_table([f"https://{HOST}:{m.port}"], retries=0))
        async with session.post(r.url + "/v1/completions", json=COMPLETION) as resp:
            assert resp.status == 503  # a self-signed worker is not trusted
            assert "CERTIFICATE_VERIFY_FAILED" in (await resp.json())["error"]["message"]
        assert m.state.requests == 0
    finally:
        m.close()
