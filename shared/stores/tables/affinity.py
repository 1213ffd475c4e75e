"""Object id -> backend pins in Table Storage: one row per stored response, file or batch.

    <prefix>affinity   PartitionKey "<object id>" (hashed if Table Storage refuses it), RowKey "pin"

One partition per id spreads the rows over the service's partitions and
makes every lookup a point read. Expired rows are ignored when read and
removed then; rows of objects never read again stay (a few hundred bytes
each) until a cleanup of the table, which the README describes.
"""

from __future__ import annotations

import hashlib

from azure.core.exceptions import ResourceNotFoundError

from shared.stores.protocols import Pin
from shared.stores.tables.account import SAFE_KEY, TableAccount, TableRows

AFFINITY = "affinity"
_ROW = "pin"


def _key(object_id: str) -> str:
    return object_id if SAFE_KEY.match(object_id) else "h-" + hashlib.sha256(object_id.encode()).hexdigest()


def _values(pin: Pin) -> dict[str, object]:
    return {
        "backend": pin.backend,
        "subscription": pin.subscription_id,
        "deployment": pin.deployment,
        "expires_at": float(pin.expires_at),
    }


class TableAffinityStore:
    def __init__(self, account: TableAccount) -> None:
        self._t = TableRows(account, AFFINITY)

    async def pin(self, object_id: str, pin: Pin) -> None:
        await self._t.upsert(_key(object_id), _ROW, _values(pin))

    async def claim(self, object_id: str, pin: Pin) -> bool:
        return await self._t.create(_key(object_id), _ROW, _values(pin)) is not None

    async def find(self, object_id: str, now: float) -> Pin | None:
        row = await self._t.get(_key(object_id), _ROW)
        if row is None:
            return None
        values = row.values
        pin = Pin(
            str(values.get("backend", "")),
            str(values.get("subscription", "")),
            str(values.get("deployment", "")),
            float(values.get("expires_at", 0.0)),
        )
        if pin.expires_at <= now:
            await self.forget(object_id)
            return None
        return pin

    async def forget(self, object_id: str) -> None:
        account = self._t.account
        client = await account.table(AFFINITY)
        async with account.boundary("delete a row of " + AFFINITY):
            try:
                await client.delete_entity(_key(object_id), _ROW)
            except ResourceNotFoundError as exc:
                if getattr(exc, "error_code", None) == "TableNotFound":
                    raise
