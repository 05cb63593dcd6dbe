"""The retry budget: retries may add at most a fraction to the load.

Per-request retry limits alone let a brown-out turn every request into
``1 + retries`` requests exactly when workers can least afford it. Like
Finagle's and Envoy's budgets, every request deposits ``ratio`` of a token,
every retry costs one, and a small time-based allowance keeps retries
possible at low traffic. The balance is capped so a quiet hour can't save
up for a storm.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class RetryBudget:
    def __init__(self, ratio: float = 0.2, min_per_second: float = 5.0, cap: float = 100.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ratio = ratio
        self.min_per_second = min_per_second
        self.cap = cap
        self.clock = clock
        self.tokens = min(cap, max(min_per_second * 2.0, 10.0))
        self._last = clock()
        self.spent = 0
        self.refused = 0

    def deposit(self) -> None:
        """One client request arrived."""
        tokens = self.tokens + self.ratio
        self.tokens = tokens if tokens < self.cap else self.cap

    def withdraw(self) -> bool:
        """May one more retry be made?"""
        now = self.clock()
        tokens = self.tokens + (now - self._last) * self.min_per_second
        self._last = now
        if tokens > self.cap:
            tokens = self.cap
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            self.spent += 1
            return True
        self.tokens = tokens
        self.refused += 1
        return False
