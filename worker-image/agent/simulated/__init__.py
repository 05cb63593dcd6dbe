"""The simulated engine: vLLM 0.32's HTTP surface without a GPU.

A first-class engine for development, tests, benchmarks and the local
demo. It answers what vLLM answers (bodies, SSE chunks, errors, `vllm:`
metrics; see tests/fixtures/vllm-0.32.0) and models service time: batch
slots, a queue beyond them, prefill time per prompt token, time per output
token and model load time. Run by the agent as a child process, like vLLM.
"""
