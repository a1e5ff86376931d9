"""A per-upstream circuit breaker: fail fast while an upstream is down."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"
STATES = (CLOSED, OPEN, HALF_OPEN)


class CircuitBreaker:
    """Opens after `threshold` consecutive failures; lets one trial through after `reset_seconds`.

    NOTE: state lives in process memory, so each gunicorn worker has its own breaker;
    each learns of an outage from its own requests, which is what we want.
    """

    def __init__(
        self,
        threshold: int,
        reset_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        """Start closed; `on_change` hears every change of state (under the lock)."""
        self._threshold = threshold
        self._reset_seconds = reset_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._state = CLOSED
        self._opened_at = 0.0
        self._trial_in_flight = False
        self._on_change = on_change

    def _set_state(self, state: str) -> None:
        if state != self._state:
            self._state = state
            if self._on_change is not None:
                self._on_change(state)

    def before_call(self) -> float | None:
        """Return None to go ahead, or the seconds until the next trial when refusing."""
        if self._state == CLOSED:
            return None
        with self._lock:
            if self._state == OPEN:
                remaining = self._opened_at + self._reset_seconds - self._clock()
                if remaining > 0:
                    return remaining
                self._set_state(HALF_OPEN)
                self._trial_in_flight = False
            if self._state == HALF_OPEN:
                if self._trial_in_flight:
                    # Only one trial at a time: the rest keep failing fast.
                    return self._reset_seconds
                self._trial_in_flight = True
            return None

    def record_success(self) -> None:
        """Close the breaker and forget past failures."""
        if self._state == CLOSED and self._failures == 0:
            return
        with self._lock:
            self._failures = 0
            self._set_state(CLOSED)
            self._trial_in_flight = False

    def record_failure(self) -> None:
        """Count a failure; open at the threshold or when the half-open trial fails."""
        with self._lock:
            self._failures += 1
            if self._state == HALF_OPEN or self._failures >= self._threshold:
                self._set_state(OPEN)
                self._opened_at = self._clock()
                self._trial_in_flight = False
