"""The simulated engine's KV-cache model (kvcache.py): tables of cases."""

import pytest
from kubeinfer.worker.simulated.kvcache import (
    PrefixCache,
    block_hashes,
    prompt_tokens_of,
    text_tokens,
)

BS = 4  # tokens per block in these tables


def toks(*names: str) -> list[bytes]:
    return [n.encode() for n in names]


def blocks(text: str) -> list[bytes]:
    """Blocks of a prompt written as space-separated tokens."""
    return block_hashes(toks(*text.split()), BS)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", [b""]),
        ("abc", [b"abc"]),
        ("abcd", [b"abcd"]),
        ("abcdefghi", [b"abcd", b"efgh", b"i"]),
    ],
)
def test_text_tokens(text: str, expected: list[bytes]) -> None:
    assert text_tokens(text) == expected


@pytest.mark.parametrize(
    ("a", "b", "shared"),
    [
        ("a b c d e f g h", "a b c d e f g h", 2),  # same prompt: both blocks
        ("a b c d e f g h", "a b c d x f g h", 1),  # differs in block 2
        ("a b c d e f g h", "x b c d e f g h", 0),  # block 1 differs: so does every later one
        ("a b c d e f g", "a b c d e f g h", 1),  # a partial block has no hash
        ("ab c d e", "a bc d e", 0),  # token boundaries count, not just bytes
    ],
)
def test_block_hashes_are_chained(a: str, b: str, shared: int) -> None:
    ha, hb = blocks(a), blocks(b)
    common = 0
    while common < min(len(ha), len(hb)) and ha[common] == hb[common]:
        common += 1
    assert common == shared


def test_chat_turns_extend_the_previous_prompt() -> None:
    system = {"role": "system", "content": "You are helpful. " * 20}
    turn1 = {"messages": [system, {"role": "user", "content": "hello there"}]}
    turn2 = {
        "messages": [
            *turn1["messages"],
            {"role": "assistant", "content": "hi!"},
            {"role": "user", "content": "more"},
        ]
    }
    t1 = prompt_tokens_of(turn1, chat=True)
    t2 = prompt_tokens_of(turn2, chat=True)
    assert t2[: len(t1)] == t1
    assert prompt_tokens_of({"prompt": [1, 2, 3]}, chat=False) == [b"1", b"2", b"3"]


# (capacity, [(prompt, output tokens), ... run one after another], expected hit tokens)
SEQUENTIAL = [
    # Second identical prompt: every block but the last (its last token is recomputed).
    (16, [("a b c d e f g h i", 1), ("a b c d e f g h i", 1)], [0, 8]),
    # 8 tokens exactly: vLLM always computes the last token, so block 2 misses.
    (16, [("a b c d e f g h", 1), ("a b c d e f g h", 1)], [0, 4]),
    # Partial hit: the shared first block only.
    (16, [("a b c d e f g h i", 1), ("a b c d x y z w v", 1)], [0, 4]),
    # No shared prefix.
    (16, [("a b c d e", 1), ("z b c d e", 1)], [0, 0]),
    # Capacity 3: the second prompt (3 blocks with output) evicts the first.
    (3, [("a b c d e f g h i", 1), ("z y x w v u t s r", 1), ("a b c d e f g h i", 1)], [0, 0, 0]),
    # Capacity 0 blocks: the cache model caches nothing.
    (0, [("a b c d e", 1), ("a b c d e", 1)], [0, 0]),
]


@pytest.mark.parametrize(("capacity", "requests", "hits"), SEQUENTIAL)
def test_hits(capacity: int, requests: list[tuple[str, int]], hits: list[int]) -> None:
    cache = PrefixCache(capacity, BS)
    got = []
    for text, out in requests:
        tokens = text.split()
        alloc = cache.allocate(blocks(text), len(tokens), len(tokens) + out)
        got.append(alloc.hit_tokens)
        cache.release(alloc)
    assert got == hits
    assert cache.hits == sum(hits)
    assert cache.queries == sum(len(t.split()) for t, _ in requests)
    assert cache.used_blocks == 0


def test_eviction_is_lru_and_frees_a_prompt_tail_first() -> None:
    cache = PrefixCache(4, BS)
    p1 = blocks("a b c d e f g h")  # 2 blocks
    p2 = blocks("z y x w v u t s")
    for p in (p1, p2):
        cache.release(cache.allocate(p, 8, 8))
    # p1 was released first and its tail goes before its head.
    assert cache.evictable() == [p1[1], p1[0], p2[1], p2[0]]
    # Touching p1 again makes it most recently used.
    cache.release(cache.allocate(p1, 9, 8))
    assert cache.evictable() == [p2[1], p2[0], p1[1], p1[0]]
    # A new 1-block prompt evicts exactly the least recently used block.
    p3 = blocks("q r s t")
    cache.release(cache.allocate(p3, 4, 4))
    assert not cache.cached(p2[1])
    assert all(cache.cached(b) for b in (p2[0], *p1, *p3))


def test_pinned_blocks_are_never_evicted_and_usage_counts_them() -> None:
    cache = PrefixCache(4, BS)
    held = cache.allocate(blocks("a b c d e f g h"), 8, 12)  # 2 cached + 1 private
    assert cache.used_blocks == 3
    assert cache.usage() == pytest.approx(0.75)
    other = cache.allocate(blocks("z y x w v u t s"), 8, 8)  # room for one block only
    assert len(other.cached) == 1
    assert other.private == 1
    assert cache.usage() == 1.0
    assert all(cache.cached(b) for b in held.cached)
    cache.release(other)
    cache.release(held)
    assert cache.used_blocks == 0
    assert cache.usage() == 0.0


def test_concurrent_requests_share_blocks() -> None:
    cache = PrefixCache(8, BS)
    p = blocks("a b c d e f g h i")
    first = cache.allocate(p, 9, 9)
    second = cache.allocate(p, 9, 9)  # while the first still runs
    assert second.hit_tokens == 8
    assert cache.used_blocks == 2 + 1 + 1  # two shared blocks, one private each
    cache.release(first)
    assert all(cache.cached(b) for b in p)
    cache.release(second)
    assert cache.evictable()[-2:] == [p[1], p[0]]


@pytest.mark.parametrize(("capacity", "block_size"), [(-1, 16), (8, 0)])
def test_rejects_nonsense_sizes(capacity: int, block_size: int) -> None:
    with pytest.raises(ValueError, match="capacity_blocks"):
        PrefixCache(capacity, block_size)


# (capacity, prompt held by a running request or None, prompt released earlier or None,
#  new prompt, its total tokens, fits)
FITS = [
    # Empty cache: 3 blocks (2 prompt + 1 for output) in 4.
    (4, None, None, "a b c d e f g h", 12, True),
    # Exactly full.
    (3, None, None, "a b c d e f g h", 12, True),
    # One block too many.
    (2, None, None, "a b c d e f g h", 12, False),
    # A running request holds 3 of 4 blocks; an unrelated 2-block request waits.
    (4, "z y x w v u t s", None, "a b c d e f g h", 8, False),
    # ... but one sharing the running request's prefix needs no new prompt block.
    (4, "a b c d e f g h", None, "a b c d e f g h", 12, True),
    # Released (evictable) blocks are room: they can be evicted.
    (4, None, "z y x w v u t s", "a b c d e f g h", 12, True),
    # Reusing an evictable block pins it: it is not room for the rest as well.
    (3, None, "a b c d", "a b c d e f g h q", 16, False),
    (4, None, "a b c d", "a b c d e f g h q", 16, True),
]


@pytest.mark.parametrize(("capacity", "running", "released", "prompt", "total", "fits"), FITS)
def test_fits_counts_shared_free_and_pinned_blocks(
    capacity: int, running: str | None, released: str | None, prompt: str, total: int,
    fits: bool,
) -> None:
    cache = PrefixCache(capacity, BS)
    if released:
        cache.release(cache.allocate(blocks(released), len(released.split()),
                                     len(released.split())))
    if running:
        cache.allocate(blocks(running), len(running.split()), len(running.split()) + 4)
    assert cache.fits(blocks(prompt), total) is fits
    if fits:  # and allocating it then stays within capacity
        alloc = cache.allocate(blocks(prompt), len(prompt.split()), total)
        assert cache.used_blocks <= capacity
        assert alloc.private == max(cache.blocks_for(total) - len(blocks(prompt)), 0)
