"""A tiny Llama model made offline and deterministically, for real vLLM on a CPU.

Run with the vLLM virtualenv's interpreter (it needs numpy, safetensors
and tokenizers, which vLLM brings):

    python -P tinymodel.py OUT_DIR

Everything is derived from fixed seeds and a fixed corpus, so two runs
write byte-identical files: the model's cache key is this file's hash.
Nothing is downloaded. The weights are random (the text is gibberish);
what matters is that vLLM loads, tokenises, schedules and streams it
exactly as it would a real Llama.

Shape choices: head_dim 64 because vLLM's CPU attention rejects 16;
float32 because numpy has no bfloat16 and the model is tiny anyway.
"""

from __future__ import annotations

import itertools
import json
import sys
from collections import Counter
from pathlib import Path

HIDDEN = 128
HEADS = 2
KV_HEADS = 1
HEAD_DIM = HIDDEN // HEADS  # 64
LAYERS = 2
INTERMEDIATE = 256
BPE_MERGES = 400
MAX_POSITIONS = 4096
SEED = 20261201

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>")
BOS, EOS = "<s>", "</s>"
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

# A fixed corpus for the BPE merges: English-like words, enough for merges
# that make ordinary prompts a few tokens shorter than bytes.
CORPUS = (
    "the quick brown fox jumps over the lazy dog while the model serves requests "
    "from many users on many gpus kubernetes operator router worker canary rollout "
    "hello world tell me a story about a cat and a dog who live in a small house "
    "what is the capital of france paris is the capital of france and a city "
    "inference service replicas traffic weight stable revision promote rollback "
    "one two three four five six seven eight nine ten eleven twelve numbers count "
    "please answer the question with a short sentence thank you very much indeed "
)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet: every byte maps to a printable character."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=True))


def train_bpe(corpus: str, merges: int) -> tuple[list[str], list[tuple[str, str]]]:
    """Byte-level BPE with deterministic tie-breaking (count, then lexical order)."""
    alphabet = _bytes_to_unicode()
    words: Counter[tuple[str, ...]] = Counter()
    for index, raw in enumerate(corpus.split()):
        text = raw if index == 0 else " " + raw
        words[tuple(alphabet[b] for b in text.encode())] += 1
    vocab = [alphabet[b] for b in range(256)]
    learned: list[tuple[str, str]] = []
    for _ in range(merges):
        pairs: Counter[tuple[str, str]] = Counter()
        for symbols, count in words.items():
            for pair in itertools.pairwise(symbols):
                pairs[pair] += count
        if not pairs:
            break
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        learned.append(best)
        vocab.append(best[0] + best[1])
        merged: Counter[tuple[str, ...]] = Counter()
        for symbols, count in words.items():
            out: list[str] = []
            i = 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    out.append(best[0] + best[1])
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            merged[tuple(out)] += count
        words = merged
    return vocab, learned


def write_tokenizer(out: Path) -> int:
    """tokenizer.json, tokenizer_config.json, special_tokens_map.json. Returns the vocab size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    symbols, merges = train_bpe(CORPUS, BPE_MERGES)
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
    for symbol in symbols:
        vocab.setdefault(symbol, len(vocab))
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    tokenizer.save(str(out / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": "<unk>",
        "pad_token": EOS,
        "add_bos_token": False,
        "model_max_length": MAX_POSITIONS,
        "chat_template": CHAT_TEMPLATE,
    }
    _write_json(out / "tokenizer_config.json", config)
    _write_json(
        out / "special_tokens_map.json",
        {"bos_token": BOS, "eos_token": EOS, "unk_token": "<unk>", "pad_token": EOS},
    )
    return len(vocab)


def write_weights(out: Path, vocab_size: int) -> None:
    """config.json and model.safetensors: a Llama with random (seeded) weights."""
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(SEED)

    def matrix(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * 0.02).astype(np.float32)

    tensors = {"model.embed_tokens.weight": matrix(vocab_size, HIDDEN)}
    for layer in range(LAYERS):
        prefix = f"model.layers.{layer}"
        tensors[f"{prefix}.self_attn.q_proj.weight"] = matrix(HEADS * HEAD_DIM, HIDDEN)
        tensors[f"{prefix}.self_attn.k_proj.weight"] = matrix(KV_HEADS * HEAD_DIM, HIDDEN)
        tensors[f"{prefix}.self_attn.v_proj.weight"] = matrix(KV_HEADS * HEAD_DIM, HIDDEN)
        tensors[f"{prefix}.self_attn.o_proj.weight"] = matrix(HIDDEN, HEADS * HEAD_DIM)
        tensors[f"{prefix}.mlp.gate_proj.weight"] = matrix(INTERMEDIATE, HIDDEN)
        tensors[f"{prefix}.mlp.up_proj.weight"] = matrix(INTERMEDIATE, HIDDEN)
        tensors[f"{prefix}.mlp.down_proj.weight"] = matrix(HIDDEN, INTERMEDIATE)
        tensors[f"{prefix}.input_layernorm.weight"] = np.ones(HIDDEN, np.float32)
        tensors[f"{prefix}.post_attention_layernorm.weight"] = np.ones(HIDDEN, np.float32)
    tensors["model.norm.weight"] = np.ones(HIDDEN, np.float32)
    tensors["lm_head.weight"] = matrix(vocab_size, HIDDEN)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "head_dim": HEAD_DIM,
        "hidden_act": "silu",
        "max_position_embeddings": MAX_POSITIONS,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "vocab_size": vocab_size,
        "bos_token_id": SPECIAL_TOKENS.index(BOS),
        "eos_token_id": SPECIAL_TOKENS.index(EOS),
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
    }
    _write_json(out / "config.json", config)
    _write_json(
        out / "generation_config.json",
        {"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"]},
    )


def _write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: tinymodel.py OUT_DIR", file=sys.stderr)
        return 2
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    vocab_size = write_tokenizer(out)
    write_weights(out, vocab_size)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
