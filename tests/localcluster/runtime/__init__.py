"""The local runtime: a kubelet for kubeinfer's own images on simulated nodes.

KWOK fakes every pod on the simulated nodes except those that run one of
our images (worker, router, operator). For those, this runtime does what
a kubelet would: gives the pod a loopback IP from its node's pod CIDR,
runs the container's command as a local process bound to that IP, runs
its probes, and writes the pod's status. See docs/local-cluster.md.
"""
