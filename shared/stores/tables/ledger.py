"""The usage ledger in Table Storage: a row per (subscription, hour, deployment, backend), added to in batches."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from azure.data.tables import EdmType, EntityProperty

from shared.errors import StoreUnavailable
from shared.stores.protocols import UsageBatch, UsageCounts, UsageKey, UsageRow
from shared.stores.tables.account import (
    CAS_ATTEMPTS,
    SAFE_KEY,
    Entity,
    Row,
    TableAccount,
    TableRows,
    checked_key,
    if_match,
)

USAGE = "usage"
_BATCH_ROWS = 100  # the most operations one entity-group transaction takes


_LAST_HOUR = 253_402_297_200 - 3600  # 9999-12-31T23:00Z: the last hour a label can name


def _hour_label(hour: int) -> str:
    return datetime.fromtimestamp(min(max(hour, 0), _LAST_HOUR), UTC).strftime("%Y%m%dT%H")


def usage_row_key(key: UsageKey) -> str:
    """`<UTC hour>|<deployment>|<backend>`: rows sort by hour, so a period is one RowKey range."""
    return f"{_hour_label(key.hour)}|{key.deployment}|{key.backend}"


def _usage_values(key: UsageKey, counts: UsageCounts, applied: Mapping[str, int]) -> Entity:
    return {
        "hour": EntityProperty(key.hour, EdmType.INT64),
        "deployment": key.deployment,
        "backend": key.backend,
        "subscription_name": counts.subscription_name,
        "prompt_tokens": EntityProperty(counts.prompt_tokens, EdmType.INT64),
        "completion_tokens": EntityProperty(counts.completion_tokens, EdmType.INT64),
        "cached_tokens": EntityProperty(counts.cached_tokens, EdmType.INT64),
        "requests": json.dumps(dict(counts.requests), separators=(",", ":"), sort_keys=True),
        "cost": float(counts.cost),
        "applied": json.dumps(dict(applied), separators=(",", ":"), sort_keys=True),
    }


def _int(value: Any) -> int:
    return int(getattr(value, "value", value) or 0)


def _usage_row(subscription_id: str, values: Mapping[str, Any]) -> UsageRow:
    key = UsageKey(subscription_id, _int(values["hour"]), str(values["deployment"]), str(values["backend"]))
    counts = UsageCounts(
        _int(values.get("prompt_tokens")),
        _int(values.get("completion_tokens")),
        _int(values.get("cached_tokens")),
        json.loads(values.get("requests") or "{}"),
        float(values.get("cost") or 0.0),
        str(values.get("subscription_name") or ""),
    )
    return UsageRow(key, counts, json.loads(values.get("applied") or "{}"))


class TableLedgerStore:
    """Usage rows: PartitionKey the subscription id, RowKey `usage_row_key`; one transaction per subscription.

    A batch costs, per subscription it touches, one query (its rows of those
    hours) and one entity-group transaction (creates, and replaces at the
    ETag read); a conflict with another instance re-reads and tries again.
    """

    def __init__(self, account: TableAccount) -> None:
        self._t = TableRows(account, USAGE)

    async def apply(self, batch: UsageBatch) -> None:
        by_subscription: dict[str, list[tuple[str, UsageKey, UsageCounts]]] = {}
        for key, counts in batch.rows.items():
            checked_key(key.subscription_id)
            row_key = usage_row_key(key)
            if not SAFE_KEY.match(row_key):
                raise ValueError(f"{row_key!r} cannot be a Table Storage row key")
            by_subscription.setdefault(key.subscription_id, []).append((row_key, key, counts))
        for subscription_id, items in by_subscription.items():
            items.sort(key=lambda item: item[0])
            for start in range(0, len(items), _BATCH_ROWS):
                await self._apply(subscription_id, items[start : start + _BATCH_ROWS], batch)

    async def _apply(
        self, subscription_id: str, items: list[tuple[str, UsageKey, UsageCounts]], batch: UsageBatch
    ) -> None:
        hours = sorted({row_key.split("|", 1)[0] + "|" for row_key, _, _ in items})
        for _ in range(CAS_ATTEMPTS):
            stored: dict[str, Row] = {}
            for prefix in hours:
                stored.update(await self._t.query(subscription_id, prefix=prefix))
            operations: list[tuple[Any, ...]] = []
            for row_key, key, counts in items:
                entity_key = {"PartitionKey": subscription_id, "RowKey": row_key}
                found = stored.get(row_key)
                if found is None:
                    values = _usage_values(key, counts, {batch.writer: batch.sequence})
                    operations.append(("create", {**entity_key, **values}))
                    continue
                row = _usage_row(subscription_id, found.values)
                if row.applied.get(batch.writer, 0) >= batch.sequence:
                    continue  # counted by an earlier try of this batch
                values = _usage_values(key, row.counts.plus(counts), {**row.applied, batch.writer: batch.sequence})
                operations.append(("update", {**entity_key, **values}, if_match(found.etag)))
            if not operations or await self._t.transact(operations):
                return
        raise StoreUnavailable(f"usage rows of {subscription_id} kept changing; gave up after {CAS_ATTEMPTS} attempts")

    async def rows(self, start_hour: int, end_hour: int, subscription_id: str | None = None) -> list[UsageRow]:
        where = "RowKey ge @lo and RowKey lt @hi"
        params: dict[str, Any] = {"lo": _hour_label(start_hour), "hi": _hour_label(end_hour)}
        if subscription_id is not None:
            if not SAFE_KEY.match(subscription_id):
                return []
            where = "PartitionKey eq @p and " + where
            params["p"] = subscription_id
        client = await self._t.account.table(USAGE)
        async with self._t.account.boundary(f"query {USAGE}"):
            entities = [e async for e in client.query_entities(where, parameters=params)]
        rows = [_usage_row(str(e["PartitionKey"]), e) for e in entities]
        return [r for r in rows if start_hour <= r.key.hour < end_hour]
