"""Managing subscriptions: one service used by the admin HTTP API, the command line and `make run`'s demo.

Input is validated here, so every way in refuses the same bad values with the same envelope.
"""

from __future__ import annotations

import contextlib
import math
import re
import secrets
import time
from dataclasses import replace
from typing import Any

from shared.auth import hash_key, new_key
from shared.clock import iso_or_none, parse_instant
from shared.errors import BadRequest, Conflict, NotFound
from shared.logs import clip
from shared.models import (
    AuthMode,
    Budget,
    BudgetAction,
    Limits,
    PromptLogScope,
    QuotaPeriod,
    Subscription,
    SubscriptionState,
    UserKey,
    UserLimits,
    prompt_log_to_json,
)
from shared.stores.protocols import SubscriptionStore

# Counters are Int64 in Table Storage and numbers in JSON readers: keep every limit an exact double.
MAX_LIMIT = 2**53 - 1
_LIMIT_FIELDS = ("tokens_per_minute", "requests_per_minute", "token_quota")
_EDITABLE = {
    "name",
    "state",
    "expires_at",
    "allowed_deployments",
    "cache_opt_out",
    "prompt_log",
    *_LIMIT_FIELDS,
    "token_quota_period",
    "identities",
    "auth_modes",
    "user_limits",
    "budget",
}
_OID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_HEADER = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_CURRENCY = re.compile(r"^[A-Za-z]{3}$|^[^\x00-\x1f]{1,8}$")
MAX_IDENTITIES = 50  # every identity is a row changed in the subscription's transaction (at most 100 rows)
# Headers a caller may not use as its end-user key: they carry secrets, or the gateway sets them.
_RESERVED_HEADERS = {"authorization", "api-key", "ocp-apim-subscription-key", "x-admin-key", "cookie", "host"}


# --- values in and out -----------------------------------------------------------------------


def _positive_or_none(fields: dict[str, Any], name: str) -> int | None:
    value = fields.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIMIT:
        raise BadRequest(f"'{name}' must be an integer from 1 to {MAX_LIMIT}, or null.", param=name)
    return value


def _limits(fields: dict[str, Any], base: Limits) -> Limits:
    merged = {
        "tokens_per_minute": base.tokens_per_minute,
        "requests_per_minute": base.requests_per_minute,
        "token_quota": base.token_quota,
        "token_quota_period": base.token_quota_period.value if base.token_quota_period else None,
        **{k: v for k, v in fields.items() if k in (*_LIMIT_FIELDS, "token_quota_period")},
    }
    period_raw = merged["token_quota_period"]
    period: QuotaPeriod | None = None
    if period_raw is not None:
        try:
            period = QuotaPeriod(str(period_raw).lower())
        except ValueError:
            raise BadRequest(
                "'token_quota_period' must be hourly, daily, weekly or monthly.", param="token_quota_period"
            ) from None
    quota = _positive_or_none(merged, "token_quota")
    if quota is not None and period is None:
        raise BadRequest("'token_quota' needs a 'token_quota_period'.", param="token_quota_period")
    return Limits(
        tokens_per_minute=_positive_or_none(merged, "tokens_per_minute"),
        requests_per_minute=_positive_or_none(merged, "requests_per_minute"),
        token_quota=quota,
        token_quota_period=period if quota is not None else None,
    )


def _expiry(value: Any) -> float | None:
    if value is None:
        return None
    instant = parse_instant(value)
    if instant is not None:
        return instant
    raise BadRequest(
        "'expires_at' must be an ISO 8601 time or epoch seconds between the years 2000 and 2200, or null.",
        param="expires_at",
    )


def _deployments(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(d, str) and d for d in value):
        raise BadRequest("'allowed_deployments' must be a list of deployment names.", param="allowed_deployments")
    return tuple(value)


def _identities(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(o, str) for o in value):
        raise BadRequest("'identities' must be a list of Entra object ids (GUIDs).", param="identities")
    oids = tuple(dict.fromkeys(o.strip().lower() for o in value))
    bad = [o for o in oids if not _OID.match(o)]
    if bad:
        raise BadRequest(f"'identities': {bad[0]!r} is not an Entra object id (a GUID).", param="identities")
    if len(oids) > MAX_IDENTITIES:
        raise BadRequest(f"'identities': at most {MAX_IDENTITIES} per subscription.", param="identities")
    return oids


def _auth_modes(value: Any) -> frozenset[AuthMode]:
    try:
        modes = frozenset(AuthMode(str(m).lower()) for m in value) if isinstance(value, list) else None
    except ValueError:
        modes = None
    if not modes:
        raise BadRequest("'auth_modes' must be a non-empty list of 'key' and 'entra'.", param="auth_modes")
    return modes


def _period(value: Any, param: str, allowed: tuple[QuotaPeriod, ...] = tuple(QuotaPeriod)) -> QuotaPeriod:
    try:
        period = QuotaPeriod(str(value).lower())
    except ValueError:
        period = None
    if period is None or period not in allowed:
        raise BadRequest(f"'{param}' must be {', '.join(p.value for p in allowed)}.", param=param)
    return period


def _object(value: Any, param: str, fields: set[str]) -> dict[str, Any]:
    """A nested object field: an object, with none but the named fields."""
    if not isinstance(value, dict):
        raise BadRequest(f"'{param}' must be an object or null.", param=param)
    unknown = set(value) - fields
    if unknown:
        raise BadRequest(f"'{param}': unknown fields {', '.join(sorted(unknown))}.", param=param)
    return value


def _user_limits(value: Any) -> UserLimits | None:
    if value is None:
        return None
    param = "user_limits"
    value = _object(value, param, {"key", "header", "tokens_per_minute", "token_quota", "token_quota_period"})
    try:
        key = UserKey(str(value.get("key", "")).lower())
    except ValueError:
        raise BadRequest("'user_limits.key' must be oid, header or ip.", param=param) from None
    header = str(value.get("header") or "x-user-id").lower()
    if not _HEADER.match(header) or header in _RESERVED_HEADERS:
        raise BadRequest("'user_limits.header' must be a header name such as x-user-id.", param=param)
    tpm = _positive_or_none(value, "tokens_per_minute")
    quota = _positive_or_none(value, "token_quota")
    period = _period(value["token_quota_period"], param) if value.get("token_quota_period") is not None else None
    if (quota is None) != (period is None):
        raise BadRequest("'user_limits': token_quota and token_quota_period go together.", param=param)
    if tpm is None and quota is None:
        raise BadRequest("'user_limits' needs tokens_per_minute or token_quota.", param=param)
    return UserLimits(key, header, tpm, quota, period)


def _budget(value: Any) -> Budget | None:
    if value is None:
        return None
    param = "budget"
    value = _object(value, param, {"amount", "period", "currency", "thresholds", "action"})
    amount = value.get("amount")
    if isinstance(amount, bool) or not isinstance(amount, int | float) or not math.isfinite(amount) or amount <= 0:
        raise BadRequest("'budget.amount' must be a positive number.", param=param)
    period = _period(
        value.get("period", "monthly"), "budget.period", (QuotaPeriod.DAILY, QuotaPeriod.WEEKLY, QuotaPeriod.MONTHLY)
    )
    currency = str(value.get("currency") or "USD")
    if not _CURRENCY.match(currency):
        raise BadRequest("'budget.currency' must be a short label such as USD or EUR.", param=param)
    thresholds = value.get("thresholds", [50, 80, 100])
    if (
        not isinstance(thresholds, list)
        or not thresholds
        or len(thresholds) > 10
        or not all(isinstance(t, int) and not isinstance(t, bool) and 1 <= t <= 1000 for t in thresholds)
    ):
        raise BadRequest("'budget.thresholds' must be a list of whole percentages (1-1000).", param=param)
    try:
        action = BudgetAction(str(value.get("action", "refuse")).lower())
    except ValueError:
        raise BadRequest("'budget.action' must be refuse or alert.", param=param) from None
    return Budget(float(amount), period, currency, tuple(sorted(set(thresholds))), action)


def _user_limits_view(user: UserLimits | None) -> dict[str, object] | None:
    if user is None:
        return None
    # The header name means nothing unless the key is a header.
    return {**user.as_json(), "header": user.header if user.key is UserKey.HEADER else None}


def _prompt_log(value: Any) -> PromptLogScope | None:
    shape = "'prompt_log' must be true, false, or {\"deployments\": [names]}."
    if value is None or value is False:
        return None
    if value is True:
        return PromptLogScope()
    if not isinstance(value, dict) or set(value) != {"deployments"}:
        raise BadRequest(shape, param="prompt_log")
    names = value["deployments"]
    if not isinstance(names, list) or not names or not all(isinstance(d, str) and d for d in names):
        raise BadRequest(shape, param="prompt_log")
    return PromptLogScope(tuple(names))


def public_view(sub: Subscription) -> dict[str, Any]:
    """A subscription as the admin API shows it: never a key, never a hash.

    Rendered defensively: a record stored before values were checked (an expiry of 1e300 or NaN) shows
    its bad field as null, flagged, rather than making every listing fail.
    """
    expires_at = iso_or_none(sub.expires_at) if sub.expires_at is not None else None
    view: dict[str, Any] = {
        "id": sub.id,
        "name": sub.name,
        "state": sub.state.value,
        "created_at": iso_or_none(sub.created_at),
        "expires_at": expires_at,
        "allowed_deployments": list(sub.allowed_deployments),
        "tokens_per_minute": sub.limits.tokens_per_minute,
        "requests_per_minute": sub.limits.requests_per_minute,
        "token_quota": sub.limits.token_quota,
        "token_quota_period": sub.limits.token_quota_period.value if sub.limits.token_quota_period else None,
        "cache_opt_out": sub.cache_opt_out,
        "identities": list(sub.identities),
        "auth_modes": sorted(m.value for m in sub.auth_modes),
        "user_limits": _user_limits_view(sub.user_limits),
        "budget": sub.budget.as_json() if sub.budget else None,
        "prompt_log": prompt_log_to_json(sub.prompt_log),
    }
    if sub.expires_at is not None and expires_at is None:
        view["invalid_fields"] = ["expires_at"]  # treated as expired by auth; PATCH it to repair the record
    return view


# --- the service ---------------------------------------------------------------------------


class SubscriptionAdmin:
    def __init__(self, store: SubscriptionStore) -> None:
        self._store = store

    async def create(
        self, fields: dict[str, Any], *, primary_key: str | None = None, subscription_id: str | None = None
    ) -> dict[str, Any]:
        unknown = set(fields) - _EDITABLE
        if unknown:
            raise BadRequest(f"Unknown fields: {', '.join(sorted(unknown))}.")
        name = fields.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise BadRequest("'name' is required (1-200 characters).", param="name")
        state = self._state(fields.get("state", "active"))
        primary = primary_key or new_key()
        secondary = new_key()
        sub = Subscription(
            id=subscription_id or "sub-" + secrets.token_hex(8),
            name=name.strip(),
            state=state,
            primary_key_hash=hash_key(primary),
            secondary_key_hash=hash_key(secondary),
            limits=_limits(fields, Limits()),
            allowed_deployments=_deployments(fields.get("allowed_deployments")),
            expires_at=_expiry(fields.get("expires_at")),
            created_at=time.time(),
            cache_opt_out=bool(fields.get("cache_opt_out", False)),
            identities=_identities(fields.get("identities")),
            auth_modes=_auth_modes(fields["auth_modes"]) if "auth_modes" in fields else frozenset(AuthMode),
            user_limits=_user_limits(fields.get("user_limits")),
            budget=_budget(fields.get("budget")),
            prompt_log=_prompt_log(fields.get("prompt_log")),
        )
        await self._identities_free(sub.id, sub.identities)
        await self._store.create(sub)
        return {**public_view(sub), "primary_key": primary, "secondary_key": secondary}

    async def _identities_free(self, sub_id: str, identities: tuple[str, ...]) -> None:
        """409 if another subscription already lists one of these identities: an oid maps to one subscription."""
        for oid in identities:
            owner = await self._store.find_by_identity(oid)
            if owner is not None and owner.id != sub_id:
                raise Conflict(
                    f"The identity {oid} already belongs to subscription {owner.id}.", code="identity_in_use"
                )

    @staticmethod
    def _state(value: Any) -> SubscriptionState:
        try:
            return SubscriptionState(str(value).lower())
        except ValueError:
            raise BadRequest("'state' must be active or suspended.", param="state") from None

    async def list(self) -> list[dict[str, Any]]:
        return [public_view(s) for s in await self._store.list()]

    async def show(self, sub_id: str) -> dict[str, Any]:
        sub = await self._store.get(sub_id)
        if sub is None:
            raise NotFound(f"No subscription {clip(sub_id)}.", code="subscription_not_found")
        return public_view(sub)

    async def update(self, sub_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        unknown = set(fields) - _EDITABLE
        if unknown:
            raise BadRequest(f"Unknown fields: {', '.join(sorted(unknown))}.")

        def change(sub: Subscription) -> Subscription:
            updated = replace(sub, limits=_limits(fields, sub.limits))
            if "name" in fields:
                name = fields["name"]
                if not isinstance(name, str) or not name.strip():
                    raise BadRequest("'name' must be a non-empty string.", param="name")
                updated = replace(updated, name=name.strip())
            if "state" in fields:
                updated = replace(updated, state=self._state(fields["state"]))
            if "expires_at" in fields:
                updated = replace(updated, expires_at=_expiry(fields["expires_at"]))
            if "allowed_deployments" in fields:
                updated = replace(updated, allowed_deployments=_deployments(fields["allowed_deployments"]))
            if "cache_opt_out" in fields:
                updated = replace(updated, cache_opt_out=bool(fields["cache_opt_out"]))
            if "identities" in fields:
                updated = replace(updated, identities=identities)
            if "auth_modes" in fields:
                updated = replace(updated, auth_modes=_auth_modes(fields["auth_modes"]))
            if "user_limits" in fields:
                updated = replace(updated, user_limits=_user_limits(fields["user_limits"]))
            if "budget" in fields:
                updated = replace(updated, budget=_budget(fields["budget"]))
            if "prompt_log" in fields:
                updated = replace(updated, prompt_log=_prompt_log(fields["prompt_log"]))
            return updated

        identities = _identities(fields.get("identities"))
        await self._identities_free(sub_id, identities)
        sub = await self._store.modify(sub_id, change)
        if sub is None:
            raise NotFound(f"No subscription {clip(sub_id)}.", code="subscription_not_found")
        return public_view(sub)

    async def regenerate(self, sub_id: str, which: str) -> dict[str, Any]:
        if which not in ("primary", "secondary"):
            raise BadRequest("'key' must be primary or secondary.", param="key")
        key = new_key()

        def change(sub: Subscription) -> Subscription:
            if which == "primary":
                return replace(sub, primary_key_hash=hash_key(key))
            return replace(sub, secondary_key_hash=hash_key(key))

        sub = await self._store.modify(sub_id, change)
        if sub is None:
            raise NotFound(f"No subscription {clip(sub_id)}.", code="subscription_not_found")
        return {"id": sub.id, f"{which}_key": key}

    async def delete(self, sub_id: str) -> None:
        if not await self._store.delete(sub_id):
            raise NotFound(f"No subscription {clip(sub_id)}.", code="subscription_not_found")


async def ensure_demo_subscription(store: SubscriptionStore, key: str) -> None:
    """`make run`'s demo subscription, created through the same path as any other."""
    if await store.find_by_key_hash(hash_key(key)) is not None:
        return
    # A fixed id per key: instances starting together on shared storage create it once, not once each.
    demo_id = "sub-demo-" + hash_key(key)[:12]
    with contextlib.suppress(ValueError):  # another instance created it a moment ago
        await SubscriptionAdmin(store).create({"name": "demo"}, primary_key=key, subscription_id=demo_id)
