"""Managing subscriptions: one service used by the admin HTTP API, the command line and `make run`'s demo.

Input is validated here, so every way in refuses the same bad values with the same envelope.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from dataclasses import replace
from typing import Any

from shared.auth import hash_key, new_key
from shared.clock import iso_or_none, parse_instant
from shared.errors import BadRequest, NotFound
from shared.logs import clip
from shared.models import (
    Limits,
    QuotaPeriod,
    Subscription,
    SubscriptionState,
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
    *_LIMIT_FIELDS,
    "token_quota_period",
}


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
        )
        await self._store.create(sub)
        return {**public_view(sub), "primary_key": primary, "secondary_key": secondary}

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
            return updated

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
