"""The simulated engine's KV cache: vLLM's automatic prefix caching, as plain data.

A prompt is cut into blocks of `block_size` tokens; each *full* block is
named by the hash of its parent block's hash and its own tokens, so a block
hash stands for the whole prefix up to it (vLLM's ``hash_block_tokens``).
A request reuses the longest run of leading blocks already cached and
allocates the rest. Blocks a running request holds are pinned; when it
ends they stay cached but become evictable, least recently used first, and
a new allocation evicts them only when the cache is full.

Pure code: no clock, no asyncio; the engine asks it how many prompt tokens
are cached and prices the prefill of the others.
"""

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# The parent of a prompt's first block (vLLM seeds it with a random value per
# process; a constant keeps hashes comparable across simulated workers).
ROOT_HASH = b"kubeinfer-kv-root"


def text_tokens(text: str) -> list[bytes]:
    """A deterministic tokenisation: four characters per token, the rule of
    thumb the simulated engine also counts prompts with (at least one token)."""
    data = text.encode("utf-8", "surrogatepass")
    if not data:
        return [b""]
    return [data[i : i + 4] for i in range(0, len(data), 4)]


def prompt_tokens_of(data: dict[str, Any], chat: bool) -> list[bytes]:
    """The token sequence the cache sees for a (validated) request: for chat,
    a role marker per message then its text, so a conversation's earlier turns
    are a prefix of its next request's prompt."""
    if not chat:
        prompt = data.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if isinstance(prompt, list):
            return [str(t).encode() for t in prompt]
        return text_tokens(prompt if isinstance(prompt, str) else "")
    tokens: list[bytes] = []
    for message in data.get("messages", []):
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        tokens.append(b"<|" + str(message.get("role", "")).encode() + b"|>")
        tokens.extend(text_tokens(content if isinstance(content, str) else ""))
    return tokens


def block_hashes(tokens: Sequence[bytes], block_size: int) -> list[bytes]:
    """Chained hashes of the full blocks of ``tokens`` (a partial tail block is
    never cached, as in vLLM)."""
    out: list[bytes] = []
    parent = ROOT_HASH
    for start in range(0, len(tokens) - block_size + 1, block_size):
        h = hashlib.blake2b(digest_size=16)
        h.update(parent)
        for token in tokens[start : start + block_size]:
            # Length-prefixed so that token boundaries are part of the hash.
            h.update(len(token).to_bytes(2, "big"))
            h.update(token)
        parent = h.digest()
        out.append(parent)
    return out


@dataclass
class Allocation:
    """What one running request holds: cached blocks (pinned) and private ones."""

    cached: list[bytes] = field(default_factory=list)
    private: int = 0
    hit_tokens: int = 0


class PrefixCache:
    """Fixed number of blocks; pinned blocks, LRU-evictable cached blocks, private blocks."""

    def __init__(self, capacity_blocks: int, block_size: int) -> None:
        if capacity_blocks < 0 or block_size < 1:
            raise ValueError("capacity_blocks must be >= 0 and block_size >= 1")
        self.capacity = capacity_blocks
        self.block_size = block_size
        self._refs: dict[bytes, int] = {}  # cached blocks in use by running requests
        self._free: OrderedDict[bytes, None] = OrderedDict()  # cached, unused; LRU first
        self._private = 0  # partial/decode blocks of running requests (never shared)
        self.queries = 0  # prompt tokens looked up (vllm:prefix_cache_queries)
        self.hits = 0  # of those, tokens found cached (vllm:prefix_cache_hits)

    # -- views -------------------------------------------------------------

    def cached(self, block: bytes) -> bool:
        return block in self._refs or block in self._free

    @property
    def used_blocks(self) -> int:
        """Blocks held by running requests (what vLLM's kv_cache_usage_perc counts)."""
        return len(self._refs) + self._private

    def usage(self) -> float:
        return min(1.0, self.used_blocks / self.capacity) if self.capacity else 0.0

    def evictable(self) -> list[bytes]:
        """Cached, unused blocks in eviction order (first goes first)."""
        return list(self._free)

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    def fits(self, hashes: Sequence[bytes], total_tokens: int) -> bool:
        """Whether `allocate` could take every block this request needs without
        going over capacity: cached blocks are shared (pinning an evictable one
        takes it out of what can be evicted), the others need a free or
        evictable block. vLLM's scheduler admits a waiting request only when
        this holds (otherwise it stays waiting, head of line)."""
        needed = max(self.blocks_for(total_tokens) - len(hashes), 0)
        pin_free = 0
        for block in hashes:
            if block in self._refs:
                continue
            if block in self._free:
                pin_free += 1
            else:
                needed += 1
        return needed <= self.capacity - len(self._refs) - self._private - pin_free

    # -- a request's life --------------------------------------------------

    def allocate(
        self, hashes: Sequence[bytes], prompt_tokens: int, total_tokens: int
    ) -> Allocation:
        """Admit a request whose prompt has these full-block ``hashes``, that will
        hold ``total_tokens`` (prompt + output) in the cache; returns what it holds.

        Like vLLM, at least the last prompt token is always computed, so a
        fully cached prompt still misses its last block.
        """
        usable = min(len(hashes), max(prompt_tokens - 1, 0) // self.block_size)
        hits = 0
        while hits < usable and self.cached(hashes[hits]):
            hits += 1
        alloc = Allocation(hit_tokens=hits * self.block_size)
        self.queries += prompt_tokens
        self.hits += alloc.hit_tokens
        for block in hashes[:hits]:
            self._pin(block)
            alloc.cached.append(block)
        for block in hashes[hits:]:
            if self.cached(block):  # a later block cached though an earlier one was not
                self._pin(block)
                alloc.cached.append(block)
            elif self._make_room():
                self._refs[block] = 1
                alloc.cached.append(block)
            else:
                alloc.private += 1  # over capacity: computed, not cached
        extra = max(self.blocks_for(total_tokens) - len(hashes), 0)
        for _ in range(extra):
            self._make_room()
        alloc.private += extra
        self._private += alloc.private
        return alloc

    def release(self, alloc: Allocation) -> None:
        """The request ended: its blocks stay cached, evictable; the tail of its
        prompt goes first (vLLM frees a sequence's blocks in reverse order)."""
        self._private -= alloc.private
        alloc.private = 0
        for block in reversed(alloc.cached):
            left = self._refs[block] - 1
            if left:
                self._refs[block] = left
            else:
                del self._refs[block]
                self._free[block] = None
        alloc.cached = []

    def _pin(self, block: bytes) -> None:
        if block in self._free:
            del self._free[block]
            self._refs[block] = 1
        else:
            self._refs[block] += 1

    def _make_room(self) -> bool:
        """Ensure one block can be taken: evict the least recently used free one
        if the cache is full. False when every block is pinned."""
        if len(self._refs) + len(self._free) + self._private < self.capacity:
            return True
        if self._free:
            self._free.popitem(last=False)
            return True
        return False
