"""Small PromQL helpers for checking dashboards and rules (no evaluation).

`metric_names` finds the metric names an expression reads, so tests can
check them against what the components export; parsing proper is left to
Prometheus' own parser (`promtool check rules`).
"""

import re
from typing import Final

from kubeinfer.operator.monitoring import labels as lb

_STRING: Final = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACES: Final = re.compile(r"\{[^{}]*\}")
_RANGE: Final = re.compile(r"\[[^\]]*\]")
_GROUPING: Final = re.compile(
    r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", re.IGNORECASE
)
_IDENT: Final = re.compile(r"(?<![\w:.$])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")
_KEYWORDS: Final = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
     "bool", "offset", "inf", "nan", "atan2"}
)  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects (functions, keywords and labels excluded)."""
    text = _STRING.sub('""', expr)
    text = _BRACES.sub("", text)
    text = _RANGE.sub("", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _IDENT.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


def substitute(expr: str, *, rate: str, namespace: str = ".*", service: str = ".*") -> str:
    """``expr`` with Grafana's variables replaced, as Grafana sends it."""
    return (
        expr.replace("$__rate_interval", rate)
        .replace(f"${lb.VAR_NAMESPACE}", namespace)
        .replace(f"${lb.VAR_SERVICE}", service)
    )


def exposed_names(text: str) -> set[str]:
    """The sample names a Prometheus text page exposes, from its # TYPE lines
    (so a family with no sample yet still counts: a counter that has not
    happened is exported all the same)."""
    names: set[str] = set()
    for line in text.splitlines():
        if not line.startswith("# TYPE "):
            continue
        _, _, name, kind = line.split(" ", 3)
        if kind == "counter":
            names.add(name if name.endswith("_total") else name + "_total")
        elif kind == "histogram":
            names.update(f"{name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        elif kind == "summary":
            names.update({name, name + "_sum", name + "_count"})
        else:
            names.add(name)
    return names
