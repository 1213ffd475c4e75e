"""The admin audit trail in Table Storage: one row per change, newest first by RowKey, never updated.

PartitionKey "audit"; RowKey is the time inverted (microseconds before a
far-off instant, zero-padded) plus a random suffix, so a plain query returns
the newest entries first and two changes in the same microsecond never clash.
Admin changes are rare, so one partition holds years of them.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from shared.stores.protocols import AuditEntry
from shared.stores.tables.account import SAFE_KEY, TableAccount, TableRows

AUDIT = "audit"
_PARTITION = "audit"
_FAR = 10**17  # microseconds: far beyond any instant the gateway will see


def _row_key(at: float) -> str:
    return f"{_FAR - int(at * 1_000_000):018d}-{secrets.token_hex(4)}"


def _values(entry: AuditEntry) -> dict[str, Any]:
    return {
        "at": float(entry.at),
        "actor": entry.actor,
        "action": entry.action,
        "route": entry.route,
        "subscription": entry.subscription_id,
        "fields": json.dumps(list(entry.fields)),
        "actor_name": entry.actor_name or "",
        "app_id": entry.app_id or "",
    }


def _entry(values: Any) -> AuditEntry:
    return AuditEntry(
        at=float(values["at"]),
        actor=str(values["actor"]),
        action=str(values["action"]),
        route=str(values["route"]),
        subscription_id=str(values["subscription"]),
        fields=tuple(json.loads(values.get("fields") or "[]")),
        actor_name=values.get("actor_name") or None,
        app_id=values.get("app_id") or None,
    )


class TableAuditStore:
    def __init__(self, account: TableAccount) -> None:
        self._t = TableRows(account, AUDIT)

    async def append(self, entry: AuditEntry) -> None:
        while await self._t.create(_PARTITION, _row_key(entry.at), _values(entry)) is None:
            continue  # the same microsecond and the same random suffix: draw another

    async def recent(self, limit: int, subscription_id: str | None = None) -> list[AuditEntry]:
        where, params = "PartitionKey eq @p", {"p": _PARTITION}
        if subscription_id is not None:
            if not SAFE_KEY.match(subscription_id):
                return []
            where += " and subscription eq @s"
            params["s"] = subscription_id
        client = await self._t.account.table(AUDIT)
        entries: list[AuditEntry] = []
        async with self._t.account.boundary(f"query {AUDIT}"):
            async for entity in client.query_entities(where, parameters=params, results_per_page=min(limit, 1000)):
                entries.append(_entry(entity))
                if len(entries) >= limit:
                    break
        return entries
