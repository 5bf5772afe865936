"""When the client tries a request again, and how long it waits first.

A request is tried again after a 503 whose code says the service will take it later (not_ready,
overloaded, deadline_exceeded) and after a transport failure (refused, reset, timed out); never
after a 4xx or another 5xx. It waits what the answer's Retry-After says, plus a little jitter so
that many clients told the same do not all come back at once; without Retry-After, exponential
backoff with full jitter. It gives up after `attempts` tries, or when the next try could not start
within `deadline` seconds of the first; the last error is then raised.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import httpx

from facedemo.client.errors import (
    FacedemoClientError,
    ProblemError,
    ServiceNotReadyError,
    ServiceOverloadedError,
    TransportError,
)

# Failures where the request may not have reached the service, or the service went away; an
# UnsupportedProtocol or a LocalProtocolError would fail the same way again.
RETRYABLE_TRANSPORT_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and for how long a request is tried (module docstring)."""

    attempts: int = 4
    deadline: float = 60.0
    backoff: float = 0.25
    max_backoff: float = 8.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, not {self.attempts}")
        if self.deadline < 0 or self.backoff < 0 or self.max_backoff < 0:
            raise ValueError("deadline, backoff and max_backoff must not be negative")

    def delay(self, retry_number: int, retry_after: float | None) -> float:
        """Seconds to wait before retry `retry_number` (0 for the first)."""
        if retry_after is not None:
            return retry_after + random.uniform(0.0, self.backoff)
        return random.uniform(0.0, min(self.max_backoff, self.backoff * 2**retry_number))


NO_RETRY = RetryPolicy(attempts=1)


def is_retryable(error: FacedemoClientError, *, when_unavailable: bool = True) -> bool:
    """Whether `error` is worth another try.

    Yes for a transport failure that could go away, and for a 503 not_ready or overloaded unless
    `when_unavailable` is off.
    """
    if isinstance(error, TransportError):
        return isinstance(error.__cause__, RETRYABLE_TRANSPORT_ERRORS)
    return when_unavailable and isinstance(error, ServiceNotReadyError | ServiceOverloadedError)


@dataclass
class Attempts:
    """The retry bookkeeping of one request: `next_delay` after each failed try."""

    policy: RetryPolicy
    when_unavailable: bool = True
    started: float = field(default_factory=time.monotonic)
    retries: int = 0

    def next_delay(self, error: FacedemoClientError) -> float | None:
        """Seconds to wait before trying again after `error`; None to give up and raise it."""
        if not is_retryable(error, when_unavailable=self.when_unavailable):
            return None
        if self.retries + 1 >= self.policy.attempts:
            return None
        retry_after = error.retry_after if isinstance(error, ProblemError) else None
        delay = self.policy.delay(self.retries, retry_after)
        if time.monotonic() + delay - self.started > self.policy.deadline:
            return None
        self.retries += 1
        return delay
