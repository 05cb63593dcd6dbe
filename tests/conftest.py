# The fixtures live in tests/plugins/ (test code), on top of the local
# cluster's distribution (kubeinfer.localcluster), which has no pytest in it.
pytest_plugins = [
    "plugins.cluster",
    "plugins.operator",
    "plugins.vllm",
]

# Hypothesis (the fuzz tests): `ci` is the default, derandomized so that
# `make test` runs the same bounded examples every time; `long` searches at
# random and much longer: `pytest <fuzz test> --hypothesis-profile=long`.
from hypothesis import settings  # noqa: E402

settings.register_profile("ci", max_examples=40, derandomize=True, database=None, print_blob=True)
settings.register_profile("long", max_examples=2000, derandomize=False, print_blob=True)
settings.load_profile("ci")
