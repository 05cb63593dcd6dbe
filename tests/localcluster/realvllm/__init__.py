"""Real vLLM (its CPU build) for tests, the local cluster and benchmarks.

`env` builds a virtualenv with pinned vLLM outside the repository, keyed
by the lock file; `tinymodel` makes a small random-weight Llama offline;
`server` starts and stops a vLLM server on loopback.
"""
