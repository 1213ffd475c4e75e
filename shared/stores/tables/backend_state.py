"""Breaker records and health-probe results in Table Storage, side by side in one table."""

from __future__ import annotations

import json

from shared.stores.protocols import Versioned
from shared.stores.tables.account import TableAccount, TableRows, checked_key

BACKENDS = "backends"
_BREAKER_PARTITION, _PROBE_PARTITION = "breaker", "probe"


class TableBackendStateStore:
    """Breaker records (compare-and-swap) and probe results (last write wins), side by side."""

    def __init__(self, account: TableAccount) -> None:
        self._t = TableRows(account, BACKENDS)

    async def load_all(self) -> dict[str, Versioned[dict[str, object]]]:
        rows = await self._t.query(_BREAKER_PARTITION)
        return {key: Versioned(json.loads(row.values["data"]), row.etag) for key, row in rows}

    async def load(self, key: str) -> Versioned[dict[str, object] | None]:
        row = await self._t.get(_BREAKER_PARTITION, checked_key(key))
        return Versioned(json.loads(row.values["data"]), row.etag) if row else Versioned(None, None)

    async def save(self, key: str, record: dict[str, object], etag: str | None) -> str | None:
        values = {"data": json.dumps(record, separators=(",", ":"))}
        if etag is None:
            return await self._t.create(_BREAKER_PARTITION, checked_key(key), values)
        return await self._t.replace(_BREAKER_PARTITION, checked_key(key), values, etag)

    async def save_probe(self, key: str, record: dict[str, object]) -> None:
        await self._t.upsert(_PROBE_PARTITION, checked_key(key), {"data": json.dumps(record, separators=(",", ":"))})

    async def load_probes(self) -> dict[str, dict[str, object]]:
        return {key: json.loads(row.values["data"]) for key, row in await self._t.query(_PROBE_PARTITION)}
