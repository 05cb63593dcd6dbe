"""Reading request bodies (what is a 400) and affinity keys; table parsing."""

from __future__ import annotations

import json

import pytest
from kubeinfer.router.config import TableError, parse_table
from kubeinfer.router.payload import (
    MAX_BLOCKS,
    BadRequestError,
    affinity_key,
    parse_inference,
    prefix_blocks,
)


@pytest.mark.parametrize(
    ("body", "chat", "param"),
    [
        (b"", False, None),
        (b'{"model": "m", "prompt": "x"', False, None),  # truncated, like err_bad_json
        (b"\xff\xfe", False, None),
        (b"[1, 2]", False, None),
        (b'"just a string"', True, None),
        (b'{"prompt": "x"}', False, "model"),
        (b'{"model": 3, "prompt": "x"}', False, "model"),
        (b'{"model": "m"}', False, "prompt"),
        (b'{"model": "m"}', True, "messages"),  # like err_missing_messages
        (b'{"model": "m", "messages": []}', True, "messages"),
        (b'{"model": "m", "messages": "hi"}', True, "messages"),
        (b'{"model": "m", "prompt": "x", "stream": "yes"}', False, "stream"),
        # Found by the fuzz tests: json's C scanner raised RecursionError.
        (b"[" * 100_000 + b"]" * 100_000, False, None),
        (b'{"model": "m", "prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", False, None),
    ],
)
def test_bad_bodies(body: bytes, chat: bool, param: str | None) -> None:
    with pytest.raises(BadRequestError) as info:
        parse_inference(body, chat=chat)
    assert info.value.param == param


@pytest.mark.parametrize(
    ("body", "chat", "stream"),
    [
        ({"model": "m", "prompt": "x"}, False, False),
        ({"model": "m", "prompt": [1, 2, 3], "stream": True}, False, True),
        ({"model": "m", "messages": [{"role": "user", "content": "hi"}]}, True, False),
    ],
)
def test_good_bodies(body: dict, chat: bool, stream: bool) -> None:
    inf = parse_inference(json.dumps(body).encode(), chat=chat)
    assert (inf.model, inf.stream) == ("m", stream)


def key(body: dict, session: bytes | None = None, prefix: int = 16) -> int | None:
    return affinity_key(
        parse_inference(json.dumps(body).encode(), chat="messages" in body), session, prefix
    )


def test_affinity_key_order_session_then_user_then_prefix() -> None:
    base = {"model": "m", "prompt": "the same long prefix, then different"}
    assert key(base, b"s1") == key({**base, "prompt": "other"}, b"s1")
    assert key({**base, "user": "u"}) == key({**base, "user": "u", "prompt": "zzz"})
    assert key(base) == key({**base, "prompt": "the same long prefix, but not this"})
    assert key(base) != key({**base, "prompt": "another prefix entirely"})


def test_chat_prefix_uses_message_text_in_order() -> None:
    system = {"role": "system", "content": "You are a helpful assistant."}
    a = {"model": "m", "messages": [system, {"role": "user", "content": "question A"}]}
    b = {"model": "m", "messages": [system, {"role": "user", "content": "question B"}]}
    parts = {
        "model": "m",
        "messages": [
            {
                "role": "system",
                "content": [{"type": "text", "text": "You are a helpful assistant."}],
            },
            {"role": "user", "content": "question C"},
        ],
    }
    assert key(a) == key(b) == key(parts)  # first 16 characters are the system prompt
    assert key(a, prefix=64) != key(b, prefix=64)


def test_no_prompt_text_means_no_key() -> None:
    assert key({"model": "m", "prompt": ""}) is None



@pytest.mark.parametrize(
    ("a", "b", "shared"),
    [
        ("x" * 1024, "x" * 1024, 4),  # same prompt: every full block
        ("x" * 1024, "x" * 600 + "y" * 424, 2),  # differs in block 3: two shared
        ("y" + "x" * 1023, "x" * 1024, 0),  # block 1 differs: so does every later one
        ("x" * 1023, "x" * 1024, 3),  # a partial block has no hash
        ("x" * 100, "x" * 100, 0),  # shorter than a block: nothing to match
    ],
)
def test_prefix_blocks_are_chained(a: str, b: str, shared: int) -> None:
    ba = prefix_blocks(parse_inference(json.dumps({"model": "m", "prompt": a}).encode(),
                                       chat=False))
    bb = prefix_blocks(parse_inference(json.dumps({"model": "m", "prompt": b}).encode(),
                                       chat=False))
    common = 0
    while common < min(len(ba), len(bb)) and ba[common] == bb[common]:
        common += 1
    assert common == shared


def test_prefix_blocks_of_a_chat_follow_its_turns_and_are_capped() -> None:
    system = {"role": "system", "content": "s" * 600}
    turn1 = [system, {"role": "user", "content": "q" * 300}]
    turn2 = [*turn1, {"role": "assistant", "content": "a" * 300},
             {"role": "user", "content": "r" * 300}]
    b1 = prefix_blocks(parse_inference(json.dumps({"model": "m", "messages": turn1}).encode(),
                                       chat=True))
    b2 = prefix_blocks(parse_inference(json.dumps({"model": "m", "messages": turn2}).encode(),
                                       chat=True))
    assert len(b1) == 3
    assert b2[:3] == b1
    huge = parse_inference(json.dumps({"model": "m", "prompt": "z" * 200_000}).encode(),
                           chat=False)
    assert len(prefix_blocks(huge)) == MAX_BLOCKS


@pytest.mark.parametrize(
    "text",
    [
        '{"service": "s", "model": "m", "backends": []}',
        "service: s\nmodel: m\nstrategy: weighted\nbackends:\n"
        "  - {name: a, url: 'http://10.0.0.1:8000', revision: r1, maxConcurrency: 8}\n",
    ],
)
def test_tables_parse_from_json_and_yaml(text: str) -> None:
    assert parse_table(text).model == "m"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("{not json", "not valid"),
        ("- a\n- b\n", "mapping"),
        ('{"service": "s"}', "model"),
        ('{"service": "s", "model": "m", "revisionWeights": {"a": 60, "b": 60}}', "100"),
        (
            '{"service": "s", "model": "m", "backends": [{"name": "a", "url": "ftp://x", '
            '"revision": "r"}]}',
            "backends.0.url",
        ),
        ('{"service": "s", "model": "m", "strategy": "random"}', "strategy"),
    ],
)
def test_bad_tables_say_why(text: str, needle: str) -> None:
    with pytest.raises(TableError, match=needle):
        parse_table(text)


def test_lone_surrogates_hash_instead_of_raising() -> None:
    """Found by the fuzz tests: a lone surrogate is valid JSON (``"\\ud800"``)
    but not encodable UTF-8; the affinity key must not crash the request."""
    a = parse_inference(b'{"model": "m", "prompt": "x", "user": "\\ud800"}', chat=False)
    b = parse_inference(b'{"model": "m", "prompt": "x", "user": "\\ud801"}', chat=False)
    assert affinity_key(a, None, 100) != affinity_key(b, None, 100)
    c = parse_inference(b'{"model": "m", "prompt": "\\udfff and more"}', chat=False)
    assert affinity_key(c, None, 100) is not None
