"""Token and request limits per subscription: reserve an estimate before the call, reconcile after it.

This module owns the `Limiter` protocol the pipeline calls. `NoLimits`
admits everything (subscriptions with no limits configured).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from shared.api import ApiCall
from shared.models import Caller


@dataclass(slots=True)
class Admission:
    """A reservation made before the call; settled exactly once after it."""

    caller: Caller
    reserved_tokens: int
    headers: dict[str, str] = field(default_factory=dict)
    settled: bool = False


class Limiter(Protocol):
    async def admit(self, caller: Caller, call: ApiCall) -> Admission:
        """Reserve the call's estimated tokens and one request; raise `RateLimited` (429) or `QuotaExceeded` (403)."""
        ...

    async def settle(self, admission: Admission, used_tokens: int) -> None:
        """Replace the reservation by what was really used (0 refunds it all)."""
        ...


class NoLimits:
    async def admit(self, caller: Caller, call: ApiCall) -> Admission:
        return Admission(caller, 0)

    async def settle(self, admission: Admission, used_tokens: int) -> None:
        admission.settled = True
