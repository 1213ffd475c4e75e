"""Injected failures: what can go wrong (`Faults`), and the per-request decision of what does (`FaultInjector`).

A fault set is one frozen value, replaced as a whole at run time. Every
request asks the injector for a `Plan` once; all dice are rolled there, and a
`count`-limited fault set is used up there, so scripted tests see exactly the
failures they asked for, in order.

Kinds, in the order a request meets them:

    down                  the connection is closed without an answer (health too)
    hang                  no answer until the client gives up (capped; released on stop)
    slow_first_byte_ms    the answer's headers are held back this long
    error_rate            an `error_status` answer with an Azure error envelope
    throttle_rate         a 429 with Retry-After / retry-after-ms / x-ratelimit-reset-requests
    drop_mid_stream_after a stream is cut after N chunks, with no terminating chunk
    drop_after_headers    any answer is cut right after its headers (and part of a body)

Network-level kinds (down, hang, slow first byte) hit every matching request;
the others only requests that would otherwise succeed (right key, known
deployment, well-formed body), so a test's fault is never spent on a 4xx.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any


class FaultError(ValueError):
    """A fault description that cannot be used (unknown field, wrong type, out of range)."""


@dataclass(frozen=True, slots=True)
class Faults:
    error_rate: float = 0.0
    error_status: int = 500
    throttle_rate: float = 0.0
    retry_after: float = 10.0
    retry_after_ms: int | None = None
    slow_first_byte_ms: float = 0.0
    hang: bool = False
    drop_mid_stream_after: int | None = None
    drop_after_headers: bool = False
    down: bool = False
    count: int | None = None
    deployments: tuple[str, ...] | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("error_rate", "throttle_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise FaultError(f"{name} must be between 0 and 1")
        if not 400 <= self.error_status <= 599:
            raise FaultError("error_status must be an HTTP error status (400-599)")
        if self.retry_after < 0 or (self.retry_after_ms is not None and self.retry_after_ms < 0):
            raise FaultError("retry_after and retry_after_ms cannot be negative")
        if self.slow_first_byte_ms < 0:
            raise FaultError("slow_first_byte_ms cannot be negative")
        if self.drop_mid_stream_after is not None and self.drop_mid_stream_after < 0:
            raise FaultError("drop_mid_stream_after cannot be negative")
        if self.count is not None and self.count < 1:
            raise FaultError("count must be at least 1 (or null for no limit)")

    @property
    def active(self) -> bool:
        return bool(
            self.error_rate
            or self.throttle_rate
            or self.slow_first_byte_ms
            or self.hang
            or self.drop_mid_stream_after is not None
            or self.drop_after_headers
            or self.down
        )

    @property
    def throttle_retry_ms(self) -> int:
        return self.retry_after_ms if self.retry_after_ms is not None else round(self.retry_after * 1000)

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        if self.deployments is not None:
            data["deployments"] = list(self.deployments)
        return data

    @classmethod
    def from_json(cls, data: object, base: Faults | None = None) -> Faults:
        """Faults from a JSON object; fields it leaves out keep their value in `base` (defaults if None)."""
        if not isinstance(data, Mapping):
            raise FaultError("faults must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise FaultError(f"unknown fault fields: {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        # Any: each value was checked against its field by _coerce.
        changes: dict[str, Any] = {name: _coerce(name, value) for name, value in data.items()}
        return replace(base or cls(), **changes)


_FLOATS = frozenset({"error_rate", "throttle_rate", "retry_after", "slow_first_byte_ms"})
_INTS = frozenset({"error_status"})
_OPTIONAL_INTS = frozenset({"retry_after_ms", "drop_mid_stream_after", "count", "seed"})
_BOOLS = frozenset({"hang", "drop_after_headers", "down"})


def _coerce(name: str, value: object) -> object:
    # JSON's bool is a subclass of int in Python; refuse it where a number is meant.
    if name in _FLOATS and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if name in _INTS and isinstance(value, int) and not isinstance(value, bool):
        return value
    if name in _OPTIONAL_INTS and (value is None or (isinstance(value, int) and not isinstance(value, bool))):
        return value
    if name in _BOOLS and isinstance(value, bool):
        return value
    if name == "deployments":
        if value is None:
            return None
        if isinstance(value, str):
            return tuple(d for d in value.split(",") if d)
        if isinstance(value, list) and all(isinstance(d, str) for d in value):
            return tuple(value)
    raise FaultError(f"fault field {name!r} has an unusable value {value!r}")


@dataclass(frozen=True, slots=True)
class Plan:
    """What one request suffers. `drop_after` is the number of stream chunks sent before the cut."""

    down: bool = False
    hang: bool = False
    delay_ms: float = 0.0
    error_status: int | None = None
    throttle: bool = False
    retry_ms: int = 10_000  # captured with the plan: a count-limited fault set clears itself once spent
    drop_after: int | None = None


NO_FAULT = Plan()


class FaultInjector:
    """The current fault set and its dice. Lives in the event loop; nothing here awaits."""

    __slots__ = ("_faults", "_remaining", "_rng")

    def __init__(self, faults: Faults | None = None) -> None:
        self._faults = Faults()
        self._remaining: int | None = None
        self._rng = random.Random()
        self.set(faults or Faults())

    @property
    def current(self) -> Faults:
        return self._faults

    @property
    def remaining(self) -> int | None:
        """How many more requests the current fault set applies to (None: no limit)."""
        return self._remaining

    def set(self, faults: Faults) -> None:
        self._faults = faults
        self._remaining = faults.count
        # Re-seeding on every change makes a scripted run reproducible from the moment its faults were set.
        self._rng = random.Random(faults.seed)

    def reset(self) -> None:
        self.set(Faults())

    def health_down(self) -> bool:
        """The health endpoint is down only when the whole server is, i.e. `down` with no deployment filter."""
        return self._faults.down and self._faults.deployments is None

    def plan(self, deployment: str | None, *, stream: bool, valid: bool) -> Plan:
        faults = self._faults
        if not faults.active:
            return NO_FAULT
        if faults.deployments is not None and deployment not in faults.deployments:
            return NO_FAULT
        if faults.down:
            return self._spend(Plan(down=True))
        if faults.hang:
            return self._spend(Plan(hang=True))
        error_status: int | None = None
        throttle = False
        drop_after: int | None = None
        if valid:
            if faults.error_rate and self._rng.random() < faults.error_rate:
                error_status = faults.error_status
            elif faults.throttle_rate and self._rng.random() < faults.throttle_rate:
                throttle = True
            elif stream and faults.drop_mid_stream_after is not None:
                drop_after = faults.drop_mid_stream_after
            elif faults.drop_after_headers:
                drop_after = 0
        plan = Plan(
            delay_ms=faults.slow_first_byte_ms,
            error_status=error_status,
            throttle=throttle,
            retry_ms=faults.throttle_retry_ms if throttle else NO_FAULT.retry_ms,
            drop_after=drop_after,
        )
        return NO_FAULT if plan == NO_FAULT else self._spend(plan)

    def _spend(self, plan: Plan) -> Plan:
        if self._remaining is not None:
            self._remaining -= 1
            if self._remaining <= 0:
                self.reset()
        return plan
