"""Whose fault a failed backend attempt is: the backend's (its breaker counts it), or the request's (none does).

The breakers are shared by every caller, so a failure counts against a backend
only when it says something about the backend rather than about the body one
caller sent:

    connection error, timeout, read error, empty stream   the backend's, counted at once
    a 5xx answer (in the breaker's status ranges)          suspect: counted only when another backend
                                                           then succeeds (2xx) with the same body
    a 5xx whose body gives a 400-class reason              the request's (Azure answers some content
      (invalid_request_error, content_filter, ...)         errors with 500), never counted
    429                                                    only with `count_429`, then at once
    anything outside the status ranges                     never counted

When every backend tried (two or more) answers the same body with a 5xx, the
request may be the cause: no breaker counts it, and the caller's 503 carries
the last backend's reason.
A 5xx that no other backend could confirm (one backend, or the others
unavailable) is not counted either; the health probe, which sends a body of
its own, opens the breaker of a backend that fails everything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum

from shared.backendconfig import BreakerPolicy
from shared.errors import AttemptFailed

# Error codes and types that say the request, not the service, is at fault, whatever the status code.
CALLER_TYPES = frozenset({"invalid_request_error"})
CALLER_CODES = frozenset(
    {
        "content_filter",
        "content_policy_violation",
        "ResponsibleAIPolicyViolation",
        "context_length_exceeded",
        "invalid_prompt",
        "invalid_request",
        "BadRequest",
        "string_above_max_length",
        "invalid_encoding",
    }
)


class Blame(StrEnum):
    BACKEND = "backend"  # counted against the backend now
    SUSPECT = "suspect"  # counted only if another backend succeeds with the same body
    REQUEST = "request"  # never counted


def caller_reason(body: bytes) -> str | None:
    """The 400-class reason an error body gives (Azure's content errors come as 500 too), if it gives one."""
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        return None
    inner = error.get("innererror")
    codes = [error.get("code"), inner.get("code") if isinstance(inner, dict) else None]
    for code in codes:
        if isinstance(code, str) and code in CALLER_CODES:
            return code
    kind = error.get("type")
    if isinstance(kind, str) and kind in CALLER_TYPES:
        return kind
    status = error.get("status")
    if isinstance(status, int) and 400 <= status < 500:
        return str(status)
    return None


def blame(policy: BreakerPolicy, failed: AttemptFailed) -> Blame:
    status = failed.status
    if status is None:
        return Blame.BACKEND  # the transport failed: no body can make a backend refuse connections
    if not policy.counts(status):
        return Blame.REQUEST
    if status < 500:
        return Blame.BACKEND  # 429 (with count_429) or another configured status: not about the body
    if caller_reason(failed.body) is not None:
        return Blame.REQUEST
    return Blame.SUSPECT


@dataclass(frozen=True, slots=True)
class Failure:
    breaker_key: str
    backend: str
    failed: AttemptFailed


@dataclass(slots=True)
class Attribution:
    """One request's failed attempts, until its fate says whose fault they were."""

    suspects: list[Failure] = field(default_factory=list)
    answered: list[Failure] = field(default_factory=list)  # every 5xx answer (not transport failures), in order
    others: int = 0  # failed attempts that were not 5xx answers

    def add(self, failure: Failure, verdict: Blame) -> None:
        status = failure.failed.status
        if status is not None and status >= 500:
            self.answered.append(failure)
        else:
            self.others += 1
        if verdict is Blame.SUSPECT:
            self.suspects.append(failure)

    def confirmed(self) -> list[Failure]:
        """The suspects another backend has just proved wrong: it succeeded with the same body."""
        confirmed, self.suspects = self.suspects, []
        return confirmed

    def request_fault(self) -> Failure | None:
        """The last answer, when every attempt was a 5xx answer from two or more backends: the request is the cause."""
        if self.others or len({f.backend for f in self.answered}) < 2:
            return None
        return self.answered[-1]
