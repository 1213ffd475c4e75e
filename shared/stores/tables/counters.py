"""The limits' counter records in Table Storage: Int64 properties, changed only by ETag compare-and-swap."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from azure.data.tables import EdmType, EntityProperty

from shared.errors import StoreUnavailable
from shared.stores.protocols import CounterChange, Counters
from shared.stores.tables.account import CAS_ATTEMPTS, Entity, TableAccount, TableRows, checked_key

LIMITS = "limits"


def _counters(values: Mapping[str, Any]) -> dict[str, int]:
    # Int64 properties come back wrapped in EntityProperty; Int32 ones as plain ints.
    return {k: int(getattr(v, "value", v)) for k, v in values.items() if k not in ("Timestamp",)}


def _int64(values: Counters) -> Entity:
    return {k: EntityProperty(int(v), EdmType.INT64) for k, v in values.items()}


class TableCounterStore:
    def __init__(self, account: TableAccount) -> None:
        self._t = TableRows(account, LIMITS)

    async def update(self, partition: str, row: str, change: CounterChange) -> tuple[Counters, Counters]:
        checked_key(partition)
        for _ in range(CAS_ATTEMPTS):
            found = await self._t.get(partition, row)
            before = _counters(found.values) if found else {}
            after = change(before)
            if after is None:
                return before, before
            if found is None:
                written = await self._t.create(partition, row, _int64(after))
            else:
                written = await self._t.replace(partition, row, _int64(after), found.etag)
            if written is not None:
                return before, dict(after)
        raise StoreUnavailable(f"limit counter {partition}/{row} kept changing; gave up after {CAS_ATTEMPTS} attempts")

    async def read(self, partition: str, row: str) -> Counters:
        found = await self._t.get(checked_key(partition), row)
        return _counters(found.values) if found else {}
