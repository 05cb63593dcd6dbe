"""vLLM metric names that kubeinfer both exports (simulated engine) and reads (router).

Defined once so that the simulator and the router cannot drift apart; the
names are vLLM 0.32's (tests/fixtures/vllm-0.32.0/metrics.txt). Counter
families are named without ``_total``: prometheus_client appends it on
exposition, and the router parses the exposed sample names.
"""

from typing import Final

NUM_REQUESTS_RUNNING: Final = "vllm:num_requests_running"
NUM_REQUESTS_WAITING: Final = "vllm:num_requests_waiting"
KV_CACHE_USAGE_PERC: Final = "vllm:kv_cache_usage_perc"  # gauge, 1.0 means full
PREFIX_CACHE_QUERIES: Final = "vllm:prefix_cache_queries"  # counter, in tokens
PREFIX_CACHE_HITS: Final = "vllm:prefix_cache_hits"  # counter, in tokens
GENERATION_TOKENS: Final = "vllm:generation_tokens"  # counter
