"""Subscriptions in Table Storage: a row per subscription, a copy per key hash and per Entra oid, changed together."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from azure.core import MatchConditions

from shared.errors import StoreUnavailable
from shared.models import (
    AuthMode,
    Budget,
    BudgetAction,
    Limits,
    QuotaPeriod,
    Subscription,
    SubscriptionState,
    UserKey,
    UserLimits,
    prompt_log_from_json,
    prompt_log_to_json,
)
from shared.stores.tables.account import CAS_ATTEMPTS, SAFE_KEY, TableAccount, TableRows, if_match

SUBSCRIPTIONS = "subscriptions"
_SUB_PARTITION = "sub"
_KEY_HASH = re.compile(r"^[0-9a-f]{64}$")


def subscription_to_json(sub: Subscription) -> str:
    limits = sub.limits
    return json.dumps(
        {
            "id": sub.id,
            "name": sub.name,
            "state": sub.state.value,
            "primary_key_hash": sub.primary_key_hash,
            "secondary_key_hash": sub.secondary_key_hash,
            "tokens_per_minute": limits.tokens_per_minute,
            "requests_per_minute": limits.requests_per_minute,
            "token_quota": limits.token_quota,
            "token_quota_period": limits.token_quota_period.value if limits.token_quota_period else None,
            "allowed_deployments": list(sub.allowed_deployments),
            "expires_at": sub.expires_at,
            "created_at": sub.created_at,
            "cache_opt_out": sub.cache_opt_out,
            "identities": list(sub.identities),
            "auth_modes": sorted(m.value for m in sub.auth_modes),
            "user_limits": sub.user_limits.as_json() if sub.user_limits else None,
            "budget": sub.budget.as_json() if sub.budget else None,
            "prompt_log": prompt_log_to_json(sub.prompt_log),
        },
        separators=(",", ":"),
    )


def _user_limits_of(raw: dict[str, Any] | None) -> UserLimits | None:
    if not raw:
        return None
    period = raw.get("token_quota_period")
    return UserLimits(
        key=UserKey(raw["key"]),
        header=raw.get("header") or "x-user-id",
        tokens_per_minute=raw.get("tokens_per_minute"),
        token_quota=raw.get("token_quota"),
        token_quota_period=QuotaPeriod(period) if period else None,
    )


def _budget_of(raw: dict[str, Any] | None) -> Budget | None:
    if not raw:
        return None
    return Budget(
        amount=float(raw["amount"]),
        period=QuotaPeriod(raw["period"]),
        currency=raw.get("currency") or "USD",
        thresholds=tuple(int(t) for t in raw.get("thresholds") or ()),
        action=BudgetAction(raw.get("action") or "refuse"),
    )


def subscription_from_json(text: str) -> Subscription:
    raw = json.loads(text)
    period = raw.get("token_quota_period")
    return Subscription(
        id=raw["id"],
        name=raw["name"],
        state=SubscriptionState(raw["state"]),
        primary_key_hash=raw["primary_key_hash"],
        secondary_key_hash=raw["secondary_key_hash"],
        limits=Limits(
            tokens_per_minute=raw.get("tokens_per_minute"),
            requests_per_minute=raw.get("requests_per_minute"),
            token_quota=raw.get("token_quota"),
            token_quota_period=QuotaPeriod(period) if period else None,
        ),
        allowed_deployments=tuple(raw.get("allowed_deployments") or ()),
        expires_at=raw.get("expires_at"),
        created_at=float(raw.get("created_at") or 0.0),
        cache_opt_out=bool(raw.get("cache_opt_out", False)),
        identities=tuple(raw.get("identities") or ()),
        # Rows written before auth modes existed accept both, as subscriptions did then.
        auth_modes=frozenset(AuthMode(m) for m in raw["auth_modes"]) if "auth_modes" in raw else frozenset(AuthMode),
        user_limits=_user_limits_of(raw.get("user_limits")),
        budget=_budget_of(raw.get("budget")),
        prompt_log=prompt_log_from_json(raw.get("prompt_log")),
    )


def _sub_row(subscription_id: str) -> str:
    return f"s-{subscription_id}"


def _key_row(key_hash: str) -> str:
    return f"k-{key_hash}"


def _identity_row(oid: str) -> str:
    return f"i-{oid}"


def _hashes(sub: Subscription) -> set[str]:
    return {sub.primary_key_hash, sub.secondary_key_hash}


def _index_rows(sub: Subscription) -> set[str]:
    """The lookup rows a subscription has: one per key hash, one per Entra object id."""
    return {_key_row(h) for h in _hashes(sub)} | {_identity_row(oid) for oid in sub.identities}


class TableSubscriptionStore:
    def __init__(self, account: TableAccount) -> None:
        self._t = TableRows(account, SUBSCRIPTIONS)

    def _key_rows(self, sub: Subscription, data: str) -> list[tuple[Any, ...]]:
        return [
            ("upsert", {"PartitionKey": _SUB_PARTITION, "RowKey": row, "subscription": sub.id, "data": data})
            for row in sorted(_index_rows(sub))
        ]

    async def get(self, subscription_id: str) -> Subscription | None:
        if not SAFE_KEY.match(subscription_id):
            return None
        row = await self._t.get(_SUB_PARTITION, _sub_row(subscription_id))
        return subscription_from_json(row.values["data"]) if row else None

    async def find_by_key_hash(self, key_hash: str) -> Subscription | None:
        if not _KEY_HASH.match(key_hash):
            return None
        row = await self._t.get(_SUB_PARTITION, _key_row(key_hash))
        return subscription_from_json(row.values["data"]) if row else None

    async def find_by_identity(self, oid: str) -> Subscription | None:
        if not SAFE_KEY.match(oid):
            return None
        row = await self._t.get(_SUB_PARTITION, _identity_row(oid))
        return subscription_from_json(row.values["data"]) if row else None

    async def create(self, subscription: Subscription) -> None:
        if not SAFE_KEY.match(subscription.id):
            raise ValueError(f"subscription id {subscription.id!r} has characters Table Storage refuses")
        data = subscription_to_json(subscription)
        row = {"PartitionKey": _SUB_PARTITION, "RowKey": _sub_row(subscription.id), "data": data}
        if not await self._t.transact([("create", row), *self._key_rows(subscription, data)]):
            raise ValueError(f"subscription {subscription.id} exists")

    async def modify(self, subscription_id: str, change: Callable[[Subscription], Subscription]) -> Subscription | None:
        if not SAFE_KEY.match(subscription_id):
            return None
        for _ in range(CAS_ATTEMPTS):
            row = await self._t.get(_SUB_PARTITION, _sub_row(subscription_id))
            if row is None:
                return None
            old = subscription_from_json(row.values["data"])
            new = change(old)
            data = subscription_to_json(new)
            operations: list[tuple[Any, ...]] = [
                (
                    "update",
                    {"PartitionKey": _SUB_PARTITION, "RowKey": _sub_row(subscription_id), "data": data},
                    if_match(row.etag),
                ),
                *self._key_rows(new, data),
                *(
                    ("delete", {"PartitionKey": _SUB_PARTITION, "RowKey": row})
                    for row in sorted(_index_rows(old) - _index_rows(new))
                ),
            ]
            if await self._t.transact(operations):
                return new
        raise StoreUnavailable(f"subscription {subscription_id} kept changing; gave up after {CAS_ATTEMPTS} attempts")

    async def delete(self, subscription_id: str) -> bool:
        if not SAFE_KEY.match(subscription_id):
            return False
        for _ in range(CAS_ATTEMPTS):
            row = await self._t.get(_SUB_PARTITION, _sub_row(subscription_id))
            if row is None:
                return False
            sub = subscription_from_json(row.values["data"])
            operations: list[tuple[Any, ...]] = [
                (
                    "delete",
                    {"PartitionKey": _SUB_PARTITION, "RowKey": _sub_row(subscription_id)},
                    {"etag": row.etag, "match_condition": MatchConditions.IfNotModified},
                ),
                *(("delete", {"PartitionKey": _SUB_PARTITION, "RowKey": row}) for row in sorted(_index_rows(sub))),
            ]
            if await self._t.transact(operations):
                return True
        raise StoreUnavailable(f"subscription {subscription_id} kept changing; gave up after {CAS_ATTEMPTS} attempts")

    async def list(self) -> list[Subscription]:
        rows = await self._t.query(_SUB_PARTITION, prefix="s-")
        return sorted((subscription_from_json(r.values["data"]) for _, r in rows), key=lambda s: s.created_at)
