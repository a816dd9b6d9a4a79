"""Limits that hold: requests and tokens per minute, the cost budget, and how long to wait before a retry.

No 60 s window ever holds more than ``rpm`` request starts or ``tpm`` tokens: starts are spaced by 60/rpm seconds
and a sliding window of (start, tokens) entries bounds the tokens. A request's tokens are estimated from its
prompt and ``max_tokens`` when it starts and corrected by the usage the provider reports.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque


class RateLimiter:
    """Call ``acquire`` right before a request goes out (inside the concurrency slot, so that requests waiting for
    a slot never fire together when one opens) and ``settle`` with the reported tokens when it is answered."""

    def __init__(self, rpm: float | None = None, tpm: float | None = None, minute: float = 60.0):
        self.rpm, self.tpm, self.minute = rpm, tpm, minute  # ``minute``: seconds per window (tests shrink it)
        self.interval = minute / rpm if rpm else 0.0
        self.next_start = 0.0
        self.window: deque[list] = deque()  # [start time, tokens] of the requests started in the last minute
        self.lock = asyncio.Lock()

    @property
    def active(self) -> bool:
        return bool(self.rpm or self.tpm)

    async def acquire(self, tokens: int = 0) -> list | None:
        if not self.active:
            return None
        need = min(tokens, self.tpm) if self.tpm else 0  # a request bigger than the budget still goes, alone
        async with self.lock:  # first come, first served
            while True:
                now = time.monotonic()
                wait = self.next_start - now
                if self.tpm:
                    while self.window and self.window[0][0] <= now - self.minute:
                        self.window.popleft()
                    if self.window and sum(t for _, t in self.window) + need > self.tpm:
                        # until the oldest start leaves the window, or a reply corrects an estimate (look again soon)
                        wait = max(wait, min(self.window[0][0] + self.minute - now, 0.05))
                if wait <= 0:
                    break
                await asyncio.sleep(wait)
            self.next_start = now + self.interval
            slot = [now, need]
            if self.tpm:
                self.window.append(slot)
            return slot

    @staticmethod
    def settle(slot: list | None, tokens: int | None) -> None:
        """Replace the estimate with the tokens the provider reported."""
        if slot is not None and tokens:
            slot[1] = tokens


class Budget:
    """``--max-cost``: USD spent so far, pooled across worker processes when ``shared`` is a multiprocessing Value."""

    def __init__(self, limit: float | None, shared=None):
        self.limit = limit
        self.shared = shared
        self.local = 0.0

    def add(self, usd: float | None) -> None:
        if not usd:
            return
        if self.shared is None:
            self.local += usd
        else:
            with self.shared.get_lock():
                self.shared.value += usd

    def spent(self) -> float:
        return self.local if self.shared is None else self.shared.value

    def exhausted(self) -> bool:
        return self.limit is not None and self.spent() >= self.limit


def retry_delay(attempt: int, retry_after: float | None, base: float, cap: float) -> float:
    """The provider's Retry-After when it sent one (capped), else jittered exponential backoff (capped)."""
    if retry_after is not None:
        return min(max(0.0, retry_after), cap)
    return random.uniform(0, min(base * 2**attempt, cap))
