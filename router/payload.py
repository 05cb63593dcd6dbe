"""What the router needs from a request body, read once, never re-encoded.

The body is parsed once to check it and to read ``model``, ``stream`` and,
for prefix affinity, the affinity key; the worker gets the client's
original bytes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from kubeinfer.router.policies import stable_hash


class BadRequestError(Exception):
    """The body can never be served; ``param`` names the offending field."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(slots=True)
class Inference:
    model: str
    stream: bool
    payload: dict[str, Any]


def parse_inference(body: bytes, *, chat: bool) -> Inference:
    """Check a completions / chat completions body. Raises `BadRequestError`."""
    if not body:
        raise BadRequestError("The request body is empty; expected a JSON object.")
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequestError(f"The request body is not valid JSON: {exc}") from None
    except RecursionError:
        # json's C scanner recurses per nesting level (found by the fuzz tests).
        raise BadRequestError("The request body is nested too deeply.") from None
    if not isinstance(payload, dict):
        raise BadRequestError("The request body must be a JSON object.")
    model = payload.get("model")
    if model is None:
        raise BadRequestError("You must provide a model parameter.", "model")
    if not isinstance(model, str):
        raise BadRequestError("`model` must be a string.", "model")
    if chat:
        messages = payload.get("messages")
        if messages is None:
            raise BadRequestError("Field required: messages.", "messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequestError("`messages` must be a non-empty array.", "messages")
    elif "prompt" not in payload:
        raise BadRequestError("Field required: prompt.", "prompt")
    stream = payload.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequestError("`stream` must be a boolean.", "stream")
    return Inference(model, stream, payload)


def affinity_key(req: Inference, session_id: bytes | None, prefix_length: int) -> int | None:
    """The hash prefix affinity routes on: ``x-session-id``, else ``user``, else
    the first ``prefix_length`` characters of the prompt (for chat: of the
    messages' text in order, so a shared system prompt lands together)."""
    if session_id:
        return stable_hash(b"s:" + session_id)
    user = req.payload.get("user")
    if isinstance(user, str) and user:
        # A lone surrogate ("\ud800") is valid JSON but not encodable UTF-8.
        return stable_hash(b"u:" + user.encode("utf-8", "surrogatepass"))
    prefix = _prompt_prefix(req.payload, prefix_length)
    if not prefix:
        return None
    return stable_hash(b"p:" + prefix.encode("utf-8", "surrogatepass"))


def _prompt_prefix(payload: dict[str, Any], limit: int) -> str:
    if "messages" in payload:
        parts: list[str] = []
        size = 0
        for message in payload["messages"]:
            if not isinstance(message, dict):
                continue
            content = message.get("content")
            texts: list[str] = []
            if isinstance(content, str):
                texts.append(content)
            elif isinstance(content, list):
                texts.extend(p["text"] for p in content
                             if isinstance(p, dict) and isinstance(p.get("text"), str))
            for text in texts:
                parts.append(text)
                size += len(text)
                if size >= limit:
                    return "".join(parts)[:limit]
        return "".join(parts)[:limit]
    prompt = payload.get("prompt")
    if isinstance(prompt, list) and prompt:
        first = prompt[0]
        if isinstance(first, str):
            prompt = first
        elif isinstance(first, int):
            prompt = ",".join(str(t) for t in prompt[:limit])
        elif isinstance(first, list):
            prompt = ",".join(str(t) for t in first[:limit])
    return prompt[:limit] if isinstance(prompt, str) else ""


# prefix-score's blocks: 64 tokens at ~4 characters each (llm-d's approximate
# prefix scorer hashes fixed-size character blocks too), at most 256 of them
# (its maxPrefixBlocksToMatch).
BLOCK_CHARS = 256
MAX_BLOCKS = 256


def prefix_blocks(req: Inference, block_chars: int = BLOCK_CHARS,
                  max_blocks: int = MAX_BLOCKS) -> tuple[int, ...]:
    """Chained hashes of the prompt's full ``block_chars``-character blocks (for
    chat: the messages' text in order): block i's hash stands for the whole
    prefix up to it, like vLLM's block hashes, so two prompts share exactly
    their common leading blocks."""
    text = _prompt_prefix(req.payload, block_chars * max_blocks)
    data = text.encode("utf-8", "surrogatepass")
    out: list[int] = []
    parent = b""
    for start in range(0, len(data) - block_chars + 1, block_chars):
        parent = hashlib.blake2b(parent + data[start : start + block_chars],
                                 digest_size=8).digest()
        out.append(int.from_bytes(parent, "big"))
    return tuple(out)
