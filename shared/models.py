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
    client_ip: str | None = None  # the TCP peer, as the host saw it (x-forwarded-for comes first where set)


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


class AuthMode(StrEnum):
    KEY = "key"  # a subscription key
    ENTRA = "entra"  # an Entra ID token whose oid the subscription lists


class UserKey(StrEnum):
    """What names an end user for per-user limits."""

    OID = "oid"  # the Entra token's object id
    HEADER = "header"  # a header the app sends (e.g. x-user-id)
    IP = "ip"  # the client address (x-forwarded-for's first hop, else the peer)


@dataclass(frozen=True, slots=True)
class UserLimits:
    """Limits on each end user of a subscription, beside the subscription's own."""

    key: UserKey
    header: str = "x-user-id"  # read when key is HEADER
    tokens_per_minute: int | None = None
    token_quota: int | None = None
    token_quota_period: QuotaPeriod | None = None

    @property
    def limits(self) -> Limits:
        return Limits(self.tokens_per_minute, None, self.token_quota, self.token_quota_period)

    def as_json(self) -> dict[str, object]:
        """The fields as plain JSON values (stored and shown the same way)."""
        return {
            "key": self.key.value,
            "header": self.header,
            "tokens_per_minute": self.tokens_per_minute,
            "token_quota": self.token_quota,
            "token_quota_period": self.token_quota_period.value if self.token_quota_period else None,
        }


class BudgetAction(StrEnum):
    REFUSE = "refuse"  # 403 budget_exceeded once the period's spend reaches the amount
    ALERT = "alert"  # alerts only


@dataclass(frozen=True, slots=True)
class Budget:
    """Money per period, costed from GATEWAY_PRICES; alerts at each threshold (percent), once per period."""

    amount: float
    period: QuotaPeriod
    currency: str = "USD"
    thresholds: tuple[int, ...] = (50, 80, 100)
    action: BudgetAction = BudgetAction.REFUSE

    def as_json(self) -> dict[str, object]:
        """The fields as plain JSON values (stored and shown the same way)."""
        return {
            "amount": self.amount,
            "period": self.period.value,
            "currency": self.currency,
            "thresholds": list(self.thresholds),
            "action": self.action.value,
        }


ALL_AUTH_MODES = frozenset(AuthMode)


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
    identities: tuple[str, ...] = ()  # Entra object ids (oid) whose tokens map to this subscription
    auth_modes: frozenset[AuthMode] = ALL_AUTH_MODES
    user_limits: UserLimits | None = None
    budget: Budget | None = None
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
    auth_mode: AuthMode = AuthMode.KEY
    principal: str | None = None  # the token's oid (Entra callers)
    user_limits: UserLimits | None = None
    end_user: str | None = None  # the per-user counter key's value, when the subscription has user limits
    budget: Budget | None = None
    prompt_log: PromptLogScope | None = None

    def logs_prompts(self, deployment: str) -> bool:
        return self.prompt_log is not None and self.prompt_log.covers(deployment)

    def may_use(self, deployment: str) -> bool:
        return not self.allowed_deployments or deployment in self.allowed_deployments


def caller_for(subscription: Subscription, *, mode: AuthMode = AuthMode.KEY, principal: str | None = None) -> Caller:
    """The caller a subscription's key or token stands for (the end user is added by the auth stage)."""
    return Caller(
        subscription_id=subscription.id,
        subscription_name=subscription.name,
        limits=subscription.limits,
        allowed_deployments=subscription.allowed_deployments,
        cache_opt_out=subscription.cache_opt_out,
        auth_mode=mode,
        principal=principal,
        user_limits=subscription.user_limits,
        budget=subscription.budget,
        prompt_log=subscription.prompt_log,
    )


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0  # of prompt_tokens, served from the backend's prompt cache

    @classmethod
    def from_json(cls, usage: Mapping[str, object]) -> Usage:
        """From an OpenAI `usage` object (`prompt_tokens_details.cached_tokens` when the backend reports it)."""
        details = usage.get("prompt_tokens_details")
        cached = details.get("cached_tokens") if isinstance(details, dict) else 0
        return cls(_count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens")), _count(cached))

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
