"""PromQL helpers: which metric names an expression reads, exposed names."""

import pytest
from kubeinfer.operator.monitoring.promql import exposed_names, metric_names, substitute

CASES = [
    ("up", {"up"}),
    ('sum by (pod) (rate(a_total{x="y", z=~"5.."}[5m]))', {"a_total"}),
    ("histogram_quantile(0.99, sum by (le) (rate(h_bucket[$__rate_interval])))", {"h_bucket"}),
    ("a / on (namespace, pod) group_left (name) b", {"a", "b"}),
    ('vllm:num_requests_running{pod="p"} > 0 and on (pod) c', {"vllm:num_requests_running", "c"}),
    ("sum(x) or vector(0)", {"x"}),
    ('absent(m{result="ok"})', {"m"}),
    ("count without (gpu) (g) > bool 1", {"g"}),
    ('d{label="or and by"} offset 5m', {"d"}),
    ("1 + 2", set()),
]


@pytest.mark.parametrize(("expr", "names"), CASES, ids=[c[0][:40] for c in CASES])
def test_metric_names(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_substitute_replaces_grafana_variables() -> None:
    expr = 'rate(a{namespace=~"$namespace", s=~"$inferenceservice"}[$__rate_interval])'
    assert substitute(expr, rate="30s", namespace="ns", service="llm") == (
        'rate(a{namespace=~"ns", s=~"llm"}[30s])'
    )


def test_exposed_names_follow_the_types() -> None:
    text = "\n".join(
        [
            "# TYPE c counter",
            "# TYPE d_total counter",
            "# TYPE h histogram",
            "# TYPE g gauge",
            "# HELP g a gauge",
            "g 1",
        ]
    )
    assert exposed_names(text) == {"c_total", "d_total", "h_bucket", "h_sum", "h_count", "g"}
