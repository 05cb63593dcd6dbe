# The fixtures live in tests/plugins/ (test code), on top of the local
# cluster's distribution (kubeinfer.localcluster), which has no pytest in it.
pytest_plugins = [
    "plugins.cluster",
    "plugins.operator",
    "plugins.vllm",
]
