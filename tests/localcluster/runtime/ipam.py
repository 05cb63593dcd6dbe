"""Pod IPs from a node's loopback pod CIDR.

KWOK hands out addresses for its own pods from the bottom of the node's
CIDR; the runtime takes them from the top, and skips every address a pod
on the node already has, so the two never collide.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable


class AddressesExhaustedError(Exception):
    """No free address is left in the node's pod CIDR."""


def allocate(pod_cidr: str, in_use: Iterable[str]) -> str:
    """The highest free host address of pod_cidr (the first host is the node's own).

    Raises AddressesExhaustedError when every address is taken.
    """
    network = ipaddress.ip_network(pod_cidr)
    taken = set(in_use)
    hosts = list(network.hosts())
    for address in reversed(hosts[1:]):
        if str(address) not in taken:
            return str(address)
    raise AddressesExhaustedError(f"no free pod IP left in {pod_cidr}")
