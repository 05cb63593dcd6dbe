pytest_plugins = [
    "kubeinfer.localcluster.pytest_plugin",
    "kubeinfer.localcluster.operator_fixtures",
    "kubeinfer.localcluster.realvllm.fixtures",
]
