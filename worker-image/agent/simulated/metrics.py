"""The simulated engine's `/metrics`: vLLM's names, types, labels and buckets.

Observations are plain integer/float updates (no locks, no label lookups);
the Prometheus text is built only when scraped, by prometheus_client, the
same library vLLM uses, so the exposition format matches too. Names and
buckets follow tests/fixtures/vllm-0.32.0/metrics.txt.
"""

import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence

from kubeinfer.operator.api import vllm_metrics as names
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.samples import Sample

TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
TOKEN_LATENCY_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
REQUEST_TIME_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0,
    40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip
PARAMS_N_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0)
FINISHED_REASONS = ("stop", "length", "abort", "error", "repetition")


def one_two_five(limit: int) -> tuple[float, ...]:
    """vLLM's token-count buckets: 1, 2, 5, 10, 20, 50, ... up to max_model_len."""
    out: list[float] = []
    scale = 1
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * scale
            if value > limit:
                return tuple(out)
            out.append(float(value))
        scale *= 10


class Histogram:
    """Bucket counts and a sum; `observe(v, n)` counts n observations of v."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]):
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, value: float, count: int = 1) -> None:
        self.counts[bisect_left(self.bounds, value)] += count
        self.total += value * count

    def cumulative(self) -> list[tuple[str, float]]:
        out = []
        running = 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            running += count
            out.append((_float_label(bound), float(running)))
        out.append(("+Inf", float(running + self.counts[-1])))
        return out


def _float_label(value: float) -> str:
    return repr(float(value))


class EngineMetrics:
    """Every number the simulated engine exports, updated in place."""

    def __init__(self, model_name: str, max_model_len: int):
        self.model_name = model_name
        self.created = time.time()
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.preemptions = 0
        self.prefix_queries = 0  # prompt tokens looked up in the prefix cache
        self.prefix_hits = 0  # of those, found cached
        self.finished = dict.fromkeys(FINISHED_REASONS, 0)
        token_buckets = one_two_five(max_model_len)
        self.ttft = Histogram(TTFT_BUCKETS)
        self.inter_token = Histogram(TOKEN_LATENCY_BUCKETS)
        self.time_per_output_token = Histogram(TOKEN_LATENCY_BUCKETS)
        self.e2e = Histogram(REQUEST_TIME_BUCKETS)
        self.queue_time = Histogram(REQUEST_TIME_BUCKETS)
        self.inference_time = Histogram(REQUEST_TIME_BUCKETS)
        self.prefill_time = Histogram(REQUEST_TIME_BUCKETS)
        self.decode_time = Histogram(REQUEST_TIME_BUCKETS)
        self.request_prompt_tokens = Histogram(token_buckets)
        self.request_generation_tokens = Histogram(token_buckets)
        self.params_max_tokens = Histogram(token_buckets)
        self.params_n = Histogram(PARAMS_N_BUCKETS)
        # Not a vLLM metric: lets benchmarks compute the simulated GPU's
        # busy fraction exactly (delta busy seconds / delta wall time).
        self.busy_seconds: Callable[[], float] = lambda: 0.0

    def histograms(self) -> list[tuple[str, str, Histogram]]:
        return [
            (
                "vllm:request_prompt_tokens",
                "Number of prefill tokens processed.",
                self.request_prompt_tokens,
            ),
            (
                "vllm:request_generation_tokens",
                "Number of generation tokens processed.",
                self.request_generation_tokens,
            ),
            ("vllm:request_params_n", "Histogram of the n request parameter.", self.params_n),
            (
                "vllm:request_params_max_tokens",
                "Histogram of the max_tokens request parameter.",
                self.params_max_tokens,
            ),
            (
                "vllm:time_to_first_token_seconds",
                "Histogram of time to first token in seconds.",
                self.ttft,
            ),
            (
                "vllm:inter_token_latency_seconds",
                "Histogram of inter-token latency in seconds.",
                self.inter_token,
            ),
            (
                "vllm:request_time_per_output_token_seconds",
                "Histogram of time_per_output_token_seconds per request.",
                self.time_per_output_token,
            ),
            (
                "vllm:e2e_request_latency_seconds",
                "Histogram of e2e request latency in seconds.",
                self.e2e,
            ),
            (
                "vllm:request_queue_time_seconds",
                "Histogram of time spent in WAITING phase for request.",
                self.queue_time,
            ),
            (
                "vllm:request_inference_time_seconds",
                "Histogram of time spent in RUNNING phase for request.",
                self.inference_time,
            ),
            (
                "vllm:request_prefill_time_seconds",
                "Histogram of time spent in PREFILL phase for request.",
                self.prefill_time,
            ),
            (
                "vllm:request_decode_time_seconds",
                "Histogram of time spent in DECODE phase for request.",
                self.decode_time,
            ),
        ]


class _Collector:
    """Turns EngineMetrics plus live gauges into Prometheus families at scrape time."""

    def __init__(
        self,
        metrics: EngineMetrics,
        running: Callable[[], int],
        waiting: Callable[[], int],
        kv_usage: Callable[[], float],
    ):
        self._m = metrics
        self._running = running
        self._waiting = waiting
        self._kv_usage = kv_usage

    def collect(self) -> Iterator[Metric]:
        m = self._m
        keys = ["engine", "model_name"]
        values = ["0", m.model_name]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, doc, labels=keys)
            family.add_metric(values, value)
            return family

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            family = CounterMetricFamily(name, doc, labels=keys)
            family.add_metric(values, value, created=m.created)
            return family

        yield gauge(
            "vllm:num_requests_running",
            "Number of requests in model execution batches.",
            self._running(),
        )
        waiting = self._waiting()
        yield gauge(
            names.NUM_REQUESTS_WAITING, "Number of requests waiting to be processed.", waiting
        )
        by_reason = GaugeMetricFamily(
            "vllm:num_requests_waiting_by_reason",
            "Number of waiting requests by reason.",
            labels=[*keys, "reason"],
        )
        by_reason.add_metric([*values, "capacity"], waiting)
        by_reason.add_metric([*values, "deferred"], 0)
        yield by_reason
        sleep = GaugeMetricFamily(
            "vllm:engine_sleep_state", "Engine sleep state.", labels=[*keys, "sleep_state"]
        )
        sleep.add_metric([*values, "awake"], 1)
        sleep.add_metric([*values, "weights_offloaded"], 0)
        sleep.add_metric([*values, "discard_all"], 0)
        yield sleep
        yield gauge(
            names.KV_CACHE_USAGE_PERC,
            "KV-cache usage. 1 means 100 percent usage.",
            self._kv_usage(),
        )
        yield counter(
            names.PREFIX_CACHE_QUERIES,
            "Prefix cache queries, in terms of number of queried tokens.",
            m.prefix_queries,
        )
        yield counter(
            names.PREFIX_CACHE_HITS,
            "Prefix cache hits, in terms of number of cached tokens.",
            m.prefix_hits,
        )
        yield counter(
            "vllm:num_preemptions",
            "Cumulative number of preemption from the engine.",
            m.preemptions,
        )
        yield counter("vllm:prompt_tokens", "Number of prefill tokens processed.", m.prompt_tokens)
        yield counter(
            "vllm:generation_tokens", "Number of generation tokens processed.", m.generation_tokens
        )
        success = CounterMetricFamily(
            "vllm:request_success",
            "Count of successfully processed requests.",
            labels=["engine", "finished_reason", "model_name"],
        )
        for reason, count in m.finished.items():
            success.add_metric(["0", reason, m.model_name], count, created=m.created)
        yield success
        for name, doc, histogram in m.histograms():
            family = HistogramMetricFamily(name, doc, labels=keys)
            family.add_metric(values, histogram.cumulative(), histogram.total)
            labels = dict(zip(keys, values, strict=True))
            family.samples.append(Sample(name + "_created", labels, m.created))
            yield family
        busy = CounterMetricFamily(
            "kubeinfer_simulated_gpu_busy_seconds",
            "Seconds the simulated GPU had at least one running request (not a vLLM metric).",
            labels=["model_name"],
        )
        busy.add_metric([m.model_name], m.busy_seconds())
        yield busy


def metrics_registry(
    metrics: EngineMetrics,
    running: Callable[[], int],
    waiting: Callable[[], int],
    kv_usage: Callable[[], float],
) -> CollectorRegistry:
    """A registry like vLLM's: process and platform metrics plus the engine's."""
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    registry.register(_Collector(metrics, running, waiting, kv_usage))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
