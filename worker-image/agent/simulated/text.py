"""Deterministic output text: the same seed and prompt give the same tokens.

Tokens are words from a fixed list, in an order drawn once from the seed.
A request reads a window of that sequence that starts where the prompt's
hash points. Everything is built at start-up, so a request costs a slice
(non-streaming) or a list lookup per token (streaming), nothing more.
"""

import random
import zlib

_WORDS = """
the model of a system that can be used to make time for each new day as in one way
with data on it from all will more about how when this also she he they we you it
graph node token cluster request kernel batch cache layer weight vector matrix stream
river mountain forest ocean light sound signal window bridge garden engine rocket
simple quiet rapid bright gentle steady random clear early late open close north south
run walk read write build learn serve route drain scale load start stop wait send
""".split()  # noqa: SIM905 (easier to read as text)
SEQUENCE_LENGTH = 4096


class TokenSource:
    """A fixed pseudo-random token sequence; windows of it are the outputs."""

    def __init__(self, seed: int, length: int = SEQUENCE_LENGTH):
        rng = random.Random(seed)
        words = [" " + rng.choice(_WORDS) for _ in range(length)]
        self.length = length
        self._seed = seed
        self._tokens = [word.encode() for word in words]
        doubled = words + words
        offsets = [0]
        for word in doubled:
            offsets.append(offsets[-1] + len(word))
        self._text = "".join(doubled)
        self._offsets = offsets

    def start(self, prompt_key: bytes) -> int:
        """Where a prompt's output begins in the sequence."""
        return (zlib.crc32(prompt_key) ^ (self._seed * 2654435761)) % self.length

    def token(self, start: int, index: int) -> bytes:
        """Token `index` of the output that begins at `start` (JSON-safe bytes)."""
        return self._tokens[(start + index) % self.length]

    def text(self, start: int, count: int) -> str:
        """The whole output of `count` tokens (JSON-safe: ASCII letters and spaces)."""
        parts = []
        while count > 0:
            take = min(count, self.length)
            parts.append(self._text[self._offsets[start] : self._offsets[start + take]])
            count -= take
        return "".join(parts)
