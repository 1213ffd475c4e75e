"""Values that pass between stages: the gateway's own request and response, the caller, subscriptions, usage."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

# Sent upstream when the caller names none (OpenAI-shape requests never do).
DEFAULT_API_VERSION = "2024-10-21"


@dataclass(slots=True)
class GatewayRequest:
    """What the HTTP adapter hands the pipeline: header names lower-cased, the body read once."""

    method: str
    path: str
    headers: Mapping[str, str]
    query: Mapping[str, str]
    body: bytes
    request_id: str


@dataclass(slots=True)
class GatewayResponse:
    """Either a whole body or a stream of already-framed bytes (SSE), never both."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None


class Operation(StrEnum):
    CHAT = "chat/completions"
    EMBEDDINGS = "embeddings"


class SubscriptionState(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class QuotaPeriod(StrEnum):
    HOURLY = "hourly"
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"


@dataclass(frozen=True, slots=True)
class Limits:
    tokens_per_minute: int | None = None
    requests_per_minute: int | None = None
    token_quota: int | None = None
    token_quota_period: QuotaPeriod | None = None


@dataclass(frozen=True, slots=True)
class Subscription:
    """A subscription as stored: keys only as hashes."""

    id: str
    name: str
    state: SubscriptionState
    primary_key_hash: str
    secondary_key_hash: str
    limits: Limits = Limits()
    allowed_deployments: tuple[str, ...] = ()  # empty: every deployment
    expires_at: float | None = None  # epoch seconds
    created_at: float = 0.0
    cache_opt_out: bool = False
    prompt_log: PromptLogScope | None = None  # None: prompts and completions are never written to the audit log


@dataclass(frozen=True, slots=True)
class PromptLogScope:
    """Which of a subscription's requests go to the audit log of prompts and completions."""

    deployments: tuple[str, ...] = ()  # empty: every deployment

    def covers(self, deployment: str) -> bool:
        return not self.deployments or deployment in self.deployments


def prompt_log_to_json(scope: PromptLogScope | None) -> bool | dict[str, list[str]]:
    """The admin API's and the stored shape: false, true (every deployment), or {"deployments": [...]}."""
    if scope is None:
        return False
    return {"deployments": list(scope.deployments)} if scope.deployments else True


def prompt_log_from_json(raw: object) -> PromptLogScope | None:
    """The stored shape back (validated when it was written, by the admin service)."""
    if raw is True:
        return PromptLogScope()
    if isinstance(raw, dict) and isinstance(raw.get("deployments"), list):
        return PromptLogScope(tuple(str(d) for d in raw["deployments"]))
    return None


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling, as the later stages need it (never the key itself)."""

    subscription_id: str
    subscription_name: str
    limits: Limits
    allowed_deployments: tuple[str, ...] = ()
    cache_opt_out: bool = False
    prompt_log: PromptLogScope | None = None

    def logs_prompts(self, deployment: str) -> bool:
        return self.prompt_log is not None and self.prompt_log.covers(deployment)

    def may_use(self, deployment: str) -> bool:
        return not self.allowed_deployments or deployment in self.allowed_deployments


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens
