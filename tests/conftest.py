pytest_plugins = ["kubeinfer.localcluster.pytest_plugin"]
