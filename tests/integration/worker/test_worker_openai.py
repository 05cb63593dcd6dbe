"""The real OpenAI client against the simulated engine (a real process)."""

from collections.abc import Iterator

import openai
import pytest
from worker_process import Worker


@pytest.fixture
def client(shared_worker: Worker) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=shared_worker.url + "/v1", api_key="unused", max_retries=0) as c:
        yield c


def test_completion(client: openai.OpenAI) -> None:
    completion = client.completions.create(model="tiny", prompt="Say hello", max_tokens=8)
    assert completion.object == "text_completion"
    assert completion.model == "tiny"
    assert completion.choices[0].finish_reason == "length"
    assert completion.choices[0].text.strip()
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 8
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 8


def test_chat_completion(client: openai.OpenAI) -> None:
    chat = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=5
    )
    assert chat.choices[0].message.role == "assistant"
    assert chat.choices[0].message.content
    assert chat.usage is not None
    assert chat.usage.completion_tokens == 5


def test_chat_without_max_tokens_stops_on_its_own(client: openai.OpenAI) -> None:
    chat = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Tell me"}]
    )
    assert chat.choices[0].finish_reason == "stop"
    assert chat.usage is not None
    assert 16 <= chat.usage.completion_tokens <= 128


def test_streaming_chat_matches_the_plain_answer(client: openai.OpenAI) -> None:
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [
        {"role": "user", "content": "Count to ten"}
    ]
    plain = client.chat.completions.create(model="tiny", messages=messages, max_tokens=12)
    stream = client.chat.completions.create(
        model="tiny",
        messages=messages,
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    # Deterministic for a seed and a prompt: the stream says what the plain answer said.
    assert content == plain.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length"
    assert set(finishes[:-1]) == {None}
    usage = chunks[-1].usage
    assert chunks[-1].choices == []
    assert usage is not None
    assert usage.completion_tokens == 12


def test_streaming_completion(client: openai.OpenAI) -> None:
    stream = client.completions.create(model="tiny", prompt="abc", max_tokens=6, stream=True)
    chunks = list(stream)
    assert len(chunks) == 6
    assert chunks[-1].choices[0].finish_reason == "length"
    assert all(chunk.usage is None for chunk in chunks)  # no include_usage: no usage chunk


def test_models(client: openai.OpenAI) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == ["tiny"]
    assert models.data[0].owned_by == "vllm"


def test_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError, match="The model `gpt-4` does not exist"):
        client.completions.create(model="gpt-4", prompt="x", max_tokens=1)
    with pytest.raises(openai.BadRequestError, match="cannot be greater than max_model_len=512"):
        client.completions.create(model="tiny", prompt="x", max_tokens=100_000)
