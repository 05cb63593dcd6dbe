"""Each comparison of shapes.py fails on a wrong shape: a table of mutations.

The recorded vLLM answers (tests/fixtures/vllm-0.32.0) compared with
themselves give no difference; each mutated copy gives the difference
named in the table. No server needed.
"""

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import shapes

FIXTURES = Path(__file__).parents[1] / "fixtures" / "vllm-0.32.0"


def body(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def error(name: str) -> tuple[int, Any]:
    head, _, text = (FIXTURES / name).read_text().partition("\n\n")
    return int(head.split()[1]), json.loads(text)


def mutated(value: Any, change: Callable[[Any], None]) -> Any:
    out = copy.deepcopy(value)
    change(out)
    return out


def test_recordings_match_themselves() -> None:
    for name in ("completion.json", "chat.json", "models.json", "version.json"):
        assert shapes.json_diff(body(name), body(name)) == []
    for name in ("completion_stream.sse", "chat_stream.sse"):
        raw = (FIXTURES / name).read_bytes()
        chat = name.startswith("chat")
        assert shapes.sse_framing(raw, chat=chat, include_usage=True) == []
        assert shapes.stream_diff(raw, raw, chat=chat) == []
    for name in ("err_bad_json.txt", "err_too_long.txt"):
        assert shapes.error_diff(error(name), error(name)) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda b: b.pop("usage"), "$: the simulator lacks ['usage']"),
        (lambda b: b.update(extra=1), "$: the simulator adds ['extra']"),
        (lambda b: b.update(created="now"), "$.created: vLLM has int, the simulator str"),
        (lambda b: b["choices"][0].update(stop_reason="x"),
         "$.choices[0].stop_reason: vLLM has null, the simulator str"),
        (lambda b: b["choices"][0]["message"].pop("reasoning"),
         "$.choices[0].message: the simulator lacks ['reasoning']"),
        (lambda b: b.update(choices=[]), "$.choices: vLLM's list has 1 items, the simulator's 0"),
        (lambda b: b.update(usage=dict(reversed(list(b["usage"].items())))),
         "$.usage: key order"),
    ],
)  # fmt: skip
def test_json_diff_finds(change: Callable[[Any], None], expected: str) -> None:
    real = body("chat.json")
    differences = shapes.json_diff(real, mutated(real, change))
    assert len(differences) == 1
    assert differences[0].startswith(expected)


def chat_stream() -> bytes:
    return (FIXTURES / "chat_stream.sse").read_bytes()


def events(raw: bytes) -> list[bytes]:
    return raw.split(b"\n\n")[:-1]


def join(parts: list[bytes]) -> bytes:
    return b"".join(part + b"\n\n" for part in parts)


def edit_chunk(raw: bytes, index: int, change: Callable[[Any], None]) -> bytes:
    parts = events(raw)
    chunk = json.loads(parts[index][len(b"data: ") :])
    change(chunk)
    parts[index] = b"data: " + json.dumps(chunk).encode()
    return join(parts)


def set_finish(chunk: Any) -> None:
    chunk["choices"][0]["finish_reason"] = "length"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda r: r.removesuffix(b"data: [DONE]\n\n"), "the last event is not `data: [DONE]`"),
        (lambda r: r.replace(b"\n\n", b"\n", 1), "events that are not one `data: ` line"),
        (lambda r: r.replace(b"data: ", b"data:", 1), "events that are not one `data: ` line"),
        (lambda r: r.removesuffix(b"\n"), "the stream does not end with a blank line"),
        (lambda r: join(events(r)[1:]), "the first chat chunk does not carry the role"),
        (lambda r: join(events(r)[:-2] + events(r)[-1:]),
         "the last chunk is not the usage chunk"),
        (lambda r: edit_chunk(r, 2, set_finish), "finish_reason is set on chunks [2, "),
        (lambda r: edit_chunk(r, 1, lambda c: c.update(usage={})),
         "a chunk before the last has `usage`"),
    ],
)  # fmt: skip
def test_sse_framing_finds(mutate: Callable[[bytes], bytes], expected: str) -> None:
    problems = shapes.sse_framing(mutate(chat_stream()), chat=True, include_usage=True)
    assert any(problem.startswith(expected) for problem in problems), problems


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda r: join(events(r)[1:]), "role chunks: vLLM sent 1, the simulator 0"),
        (lambda r: edit_chunk(r, 1, lambda c: c["choices"][0].pop("token_ids")),
         "token chunk.choices[0]: the simulator lacks ['token_ids']"),
        (lambda r: edit_chunk(r, -2, lambda c: c.pop("system_fingerprint")),
         "usage chunk: the simulator lacks ['system_fingerprint']"),
        (lambda r: edit_chunk(r, 0, lambda c: c["choices"][0]["delta"].update(content=None)),
         "role chunk.choices[0].delta.content: vLLM has str, the simulator null"),
    ],
)  # fmt: skip
def test_stream_diff_finds(mutate: Callable[[bytes], bytes], expected: str) -> None:
    raw = chat_stream()
    assert expected in shapes.stream_diff(raw, mutate(raw), chat=True)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda e: e[1]["error"].update(type="BadRequestError"),
         "error.type: vLLM 'Bad Request', the simulator 'BadRequestError'"),
        (lambda e: e[1]["error"].update(param=None),
         "error.param: vLLM 'body.29', the simulator None"),
        (lambda e: e[1]["error"].pop("code"), "$.error: the simulator lacks ['code']"),
        (lambda e: e.__setitem__(0, 422), "status: vLLM 400, the simulator 422"),
    ],
)  # fmt: skip
def test_error_diff_finds(change: Callable[[Any], None], expected: str) -> None:
    real = error("err_bad_json.txt")
    ours = mutated(list(real), change)
    assert expected in shapes.error_diff(real, (ours[0], ours[1]))


def test_metrics_diff_finds() -> None:
    real = shapes.metric_families((FIXTURES / "metrics.txt").read_text())
    running = "vllm:num_requests_running"
    assert shapes.metrics_diff(real, real, {running}) == []
    assert shapes.metrics_diff(real, {}, {running}) == [
        f"{running}: the simulator lacks it (read by kubeinfer)"
    ]
    wrong_type = dict(real) | {running: ("counter", real[running][1])}
    assert shapes.metrics_diff(real, wrong_type, set()) == [
        f"{running}: vLLM {real[running]}, the simulator {wrong_type[running]}"
    ]
    invented = dict(real) | {"vllm:invented": ("gauge", frozenset())}
    assert shapes.metrics_diff(real, invented, set()) == ["vllm:invented: not a vLLM metric"]
    assert shapes.metrics_diff(real, real, {"vllm:nope"}) == [
        "vllm:nope: vLLM does not export it (read by kubeinfer)"
    ]


def test_metrics_read_by(tmp_path: Path) -> None:
    source = tmp_path / "reader.py"
    source.write_text('X = b"vllm:num_requests_waiting{"\nY = "vllm:generation_tokens_total "\n')
    assert shapes.metrics_read_by([source]) == {
        "vllm:num_requests_waiting",
        "vllm:generation_tokens",
    }
