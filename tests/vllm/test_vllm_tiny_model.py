"""The tiny model on real vLLM: it loads, chats with its own template, streams.

These are the ground every other real-vLLM test stands on; when vLLM or
the model generator changes, they say so first.
"""

import json
import urllib.request
from pathlib import Path

import openai
from kubeinfer.localcluster.realvllm.server import MAX_MODEL_LEN, SERVED_NAME, VllmServer


def test_the_model_is_made_deterministically(tiny_model: Path, tmp_path: Path) -> None:
    """A second run of the generator writes byte-identical files (the cache key relies on it)."""
    import subprocess

    from kubeinfer.localcluster.realvllm.env import TINY_MODEL_SCRIPT, ensure_vllm_env

    env = ensure_vllm_env(print)
    again = tmp_path / "again"
    subprocess.run([str(env.python), "-P", str(TINY_MODEL_SCRIPT), str(again)], check=True)
    names = sorted(p.name for p in again.iterdir())
    assert "model.safetensors" in names
    assert "tokenizer.json" in names
    for name in names:
        assert (again / name).read_bytes() == (tiny_model / name).read_bytes(), name
    config = json.loads((again / "config.json").read_text())
    assert config["hidden_size"] // config["num_attention_heads"] == 64


def test_models_list_the_tiny_model(shared_vllm: VllmServer) -> None:
    with urllib.request.urlopen(f"{shared_vllm.url}/v1/models", timeout=10) as response:
        body = json.loads(response.read())
    (model,) = body["data"]
    assert model["id"] == SERVED_NAME
    assert model["max_model_len"] == MAX_MODEL_LEN


def test_chat_and_stream_with_the_openai_client(shared_vllm: VllmServer) -> None:
    client = openai.OpenAI(base_url=f"{shared_vllm.url}/v1", api_key="unused", max_retries=0)
    chat = client.chat.completions.create(
        model=SERVED_NAME, messages=[{"role": "user", "content": "hello"}], max_tokens=8
    )
    assert chat.choices[0].finish_reason in ("length", "stop")
    assert chat.usage is not None
    assert 0 < chat.usage.completion_tokens <= 8
    # The chat template wraps the prompt: more prompt tokens than the word alone.
    assert chat.usage.prompt_tokens > 2
    stream = client.completions.create(
        model=SERVED_NAME,
        prompt="the quick brown fox",
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    chunks = list(stream)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 16
