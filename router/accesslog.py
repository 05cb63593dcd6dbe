"""One structured (JSON) line per client request.

Lines are buffered and written a few times a second rather than once per
request: at thousands of requests a second a write() per request is a
noticeable share of the router's CPU, and a log line 100 ms late is fine.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any, TextIO

FLUSH_SECONDS = 0.1
MAX_BUFFERED = 512


class AccessLog:
    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream
        self._lines: list[str] = []
        self._timer: asyncio.TimerHandle | None = None

    @classmethod
    def open(cls, target: str) -> AccessLog:
        """``-`` for stdout, ``off`` for none, else a file path (appended)."""
        if target == "off":
            return cls(None)
        if target == "-":
            return cls(sys.stdout)
        return cls(open(target, "a", encoding="utf-8", buffering=1 << 16))

    @property
    def enabled(self) -> bool:
        return self.stream is not None

    def write(self, record: dict[str, Any]) -> None:
        """Log one record (a dict of JSON values)."""
        if self.stream is not None:
            self.write_line(json.dumps(record, separators=(",", ":"), ensure_ascii=False)[1:-1])

    def write_line(self, fields: str) -> None:
        """Log one record given as the inside of a JSON object (``"a":1,"b":2``)."""
        if self.stream is None:
            return
        self._lines.append(f'{{"ts":{time.time():.6f},{fields}}}')
        if len(self._lines) >= MAX_BUFFERED:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._timer = loop.call_later(FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.stream is None or not self._lines:
            return
        lines, self._lines = self._lines, []
        try:
            self.stream.write("\n".join(lines) + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            # A closed or full log must never take the data plane down.
            pass
