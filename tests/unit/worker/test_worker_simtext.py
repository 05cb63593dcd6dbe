"""The simulated engine's output text: deterministic for a seed and a prompt."""

from kubeinfer.worker.simulated.text import TokenSource


def test_same_seed_same_prompt_same_text() -> None:
    a, b = TokenSource(seed=1), TokenSource(seed=1)
    start = a.start(b"hello")
    assert start == b.start(b"hello")
    assert a.text(start, 50) == b.text(start, 50)


def test_stream_tokens_join_to_the_text() -> None:
    source = TokenSource(seed=3, length=64)
    start = source.start(b"prompt")
    tokens = b"".join(source.token(start, i) for i in range(200))  # wraps around three times
    assert tokens.decode() == source.text(start, 200)


def test_seed_and_prompt_change_the_text() -> None:
    one, two = TokenSource(seed=1), TokenSource(seed=2)
    assert one.text(one.start(b"x"), 30) != two.text(two.start(b"x"), 30)
    assert one.start(b"x") != one.start(b"y")


def test_text_is_json_safe() -> None:
    source = TokenSource(seed=0)
    text = source.text(0, source.length)
    assert text.isascii()
    assert '"' not in text
    assert "\\" not in text
