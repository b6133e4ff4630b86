"""The cost cap (``--llm_max_cost_usd``): spend is reserved before a request is sent, settled after.

A request whose estimated cost (prompt estimate plus the full ``max_tokens`` of completion, at
``--llm_prices``, with the batch discount in batch mode) would take this worker's spend past its
share of the cap is not sent: its item goes to ``failures/`` as ``llm_budget_exhausted``, and a rerun
with a higher cap continues from the cache (a cached reply costs nothing).
"""

from __future__ import annotations

import threading

BUDGET_EXHAUSTED = "llm_budget_exhausted"


class BudgetExhausted(Exception):
    """The next request would cross the cost cap."""


class Budget:
    """Spend of one worker process against its cap (0: no cap). Thread-safe plain numbers."""

    def __init__(self, cap: float) -> None:
        self.cap, self.spent, self.reserved = cap, 0.0, 0.0
        self._lock = threading.Lock()

    def reserve(self, estimate: float) -> float:
        """Hold ``estimate`` for a request about to be sent; raise :class:`BudgetExhausted` if it does not fit."""
        with self._lock:
            if self.cap and self.spent + self.reserved + estimate > self.cap:
                raise BudgetExhausted(
                    f"estimated ${estimate:.6f} more would pass the cap of ${self.cap:.4f} "
                    f"(spent ${self.spent:.4f}, ${self.reserved:.4f} in flight)"
                )
            self.reserved += estimate
            return estimate

    def settle(self, reserved: float, actual: float) -> None:
        """Replace a reservation by what the reply really cost (0 for a request that was not paid)."""
        with self._lock:
            self.reserved = max(0.0, self.reserved - reserved)
            self.spent += actual


_SHARED: dict[tuple[str, float], Budget] = {}
_SHARED_LOCK = threading.Lock()


def shared_budget(run_id: str, cap: float) -> Budget:
    """The one budget of this worker process for a run (every stage of the run spends from it)."""
    with _SHARED_LOCK:
        if (run_id, cap) not in _SHARED:
            _SHARED[(run_id, cap)] = Budget(cap)
        return _SHARED[(run_id, cap)]
