"""Compare the shape of what two servers said: JSON, SSE streams, errors, metrics.

Pure functions that return a list of differences (empty: same shape), so
a test can show every difference at once and the tables in
test_shapes.py can show that each check catches a wrong shape.
Values that are random or volatile (ids, timestamps, text, counts) are
never compared; keys, key order, value types, framing and error fields are.
"""

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families


def _type(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def json_diff(real: Any, ours: Any, path: str = "$") -> list[str]:
    """Differences in keys (and their order) and value types, recursively.

    Lists are compared by their first item (vLLM's lists here hold items
    of one shape); an empty list against a non-empty one is a difference.
    """
    if _type(real) != _type(ours):
        return [f"{path}: vLLM has {_type(real)}, the simulator {_type(ours)}"]
    if isinstance(real, dict):
        out = []
        missing = [key for key in real if key not in ours]
        extra = [key for key in ours if key not in real]
        if missing:
            out.append(f"{path}: the simulator lacks {missing}")
        if extra:
            out.append(f"{path}: the simulator adds {extra}")
        if not missing and not extra and list(real) != list(ours):
            out.append(f"{path}: key order {list(real)} vs {list(ours)}")
        for key in real:
            if key in ours:
                out += json_diff(real[key], ours[key], f"{path}.{key}")
        return out
    if isinstance(real, list):
        if bool(real) != bool(ours):
            return [f"{path}: vLLM's list has {len(real)} items, the simulator's {len(ours)}"]
        return json_diff(real[0], ours[0], f"{path}[0]") if real else []
    return []


def sse_framing(raw: bytes, *, chat: bool, include_usage: bool) -> list[str]:
    """What is wrong with an OpenAI stream as vLLM frames it (empty: nothing)."""
    problems = []
    if not raw.endswith(b"\n\n"):
        problems.append("the stream does not end with a blank line")
    events = raw.split(b"\n\n")
    if events[-1] != b"":
        events.append(b"")
    events = events[:-1]
    not_data = [e[:40] for e in events if not e.startswith(b"data: ") or b"\n" in e]
    if not_data:
        problems.append(f"events that are not one `data: ` line: {not_data}")
    if not events or events[-1] != b"data: [DONE]":
        problems.append("the last event is not `data: [DONE]`")
        return problems
    try:
        chunks = [json.loads(e[len(b"data: ") :]) for e in events[:-1]]
    except ValueError as error:
        return [*problems, f"a chunk is not JSON: {error}"]
    if include_usage:
        if not chunks or chunks[-1].get("choices") != [] or "usage" not in chunks[-1]:
            problems.append("the last chunk is not the usage chunk (empty choices, usage)")
        else:
            chunks = chunks[:-1]
    if any("usage" in chunk for chunk in chunks):
        problems.append("a chunk before the last has `usage`")
    if chat and (not chunks or chunks[0]["choices"][0].get("delta", {}).get("role") is None):
        problems.append("the first chat chunk does not carry the role")
    finishes = [i for i, c in enumerate(chunks) if c["choices"][0].get("finish_reason")]
    if finishes != [len(chunks) - 1]:
        problems.append(f"finish_reason is set on chunks {finishes} of {len(chunks)}, not the last")
    return problems


def chunk_kinds(raw: bytes, *, chat: bool) -> dict[str, list[Any]]:
    """The JSON chunks of a stream by kind: role, token, final, usage."""
    events = [e[len(b"data: ") :] for e in raw.split(b"\n\n") if e.startswith(b"data: {")]
    kinds: dict[str, list[Any]] = {"role": [], "token": [], "final": [], "usage": []}
    for event in events:
        chunk = json.loads(event)
        if chunk.get("choices") == []:
            kinds["usage"].append(chunk)
        elif chat and "role" in chunk["choices"][0].get("delta", {}):
            kinds["role"].append(chunk)
        elif chunk["choices"][0].get("finish_reason") is not None:
            kinds["final"].append(chunk)
        else:
            kinds["token"].append(chunk)
    return kinds


def stream_diff(real: bytes, ours: bytes, *, chat: bool) -> list[str]:
    """Per chunk kind: the same kinds present, every chunk of a kind shaped alike."""
    out = []
    theirs, mine = chunk_kinds(real, chat=chat), chunk_kinds(ours, chat=chat)
    for kind, real_chunks in theirs.items():
        if bool(real_chunks) != bool(mine[kind]):
            sent = f"vLLM sent {len(real_chunks)}, the simulator {len(mine[kind])}"
            out.append(f"{kind} chunks: {sent}")
            continue
        for chunk in real_chunks[:1] + mine[kind]:
            out += json_diff(real_chunks[0] if real_chunks else None, chunk, f"{kind} chunk")
    return sorted(set(out))


def error_diff(real: tuple[int, Any], ours: tuple[int, Any]) -> list[str]:
    """Status, body shape and the error's type, param and code (not its wording)."""
    out = []
    if real[0] != ours[0]:
        out.append(f"status: vLLM {real[0]}, the simulator {ours[0]}")
    out += json_diff(real[1], ours[1])
    real_error, our_error = real[1].get("error", {}), ours[1].get("error", {})
    for field in ("type", "param", "code"):
        if real_error.get(field) != our_error.get(field):
            out.append(f"error.{field}: vLLM {real_error.get(field)!r}, "
                       f"the simulator {our_error.get(field)!r}")  # fmt: skip
    return out


Families = dict[str, tuple[str, frozenset[str]]]


def metric_families(text: str) -> Families:
    """`vllm:` family name -> (type, label names without `le`)."""
    out = {}
    for family in text_string_to_metric_families(text):
        if family.name.startswith("vllm:"):
            labels = {k for s in family.samples for k in s.labels if k != "le"}
            out[family.name] = (family.type, frozenset(labels))
    return out


def metrics_diff(real: Families, ours: Families, needed: Iterable[str]) -> list[str]:
    """Every needed family in both with the same type and labels; nothing vLLM lacks."""
    out = []
    for name in sorted(needed):
        if name not in real:
            out.append(f"{name}: vLLM does not export it (read by kubeinfer)")
        elif name not in ours:
            out.append(f"{name}: the simulator lacks it (read by kubeinfer)")
    for name, kind in sorted(ours.items()):
        if name not in real:
            out.append(f"{name}: not a vLLM metric")
        elif real[name] != kind:
            out.append(f"{name}: vLLM {real[name]}, the simulator {kind}")
    return out


# `vllm:foo_total` in code is the sample of counter family `vllm:foo`.
_METRIC = re.compile(rb"vllm:[a-z_]+")


def metrics_read_by(sources: Iterable[Path]) -> set[str]:
    """The `vllm:` family names that these source files mention."""
    names = set()
    for source in sources:
        for match in _METRIC.findall(source.read_bytes()):
            name = match.decode()
            names.add(name.removesuffix("_total") if name.endswith("_total") else name)
    return names
