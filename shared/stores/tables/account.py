"""The Table Storage account: the one service client, the boundary that maps azure-core errors, row operations.

azure-core exceptions become `StoreUnavailable` in `TableAccount.boundary` and
nowhere else; `TableRows` catches first the few answers a store expects (a
missing row, a stale ETag, an existing row) and turns them into values.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableTransactionError, UpdateMode

from shared.errors import StoreUnavailable
from shared.stores.sdkoptions import client_options

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential
    from azure.data.tables.aio import TableClient, TableServiceClient

    from shared.config import StorageConfig
    from shared.httpsession import SessionProvider

log = logging.getLogger("gateway.tables")

Entity = dict[str, Any]

# Keys reach RowKeys from requests; Table Storage refuses '/', '\\', '#', '?' and control characters.
SAFE_KEY = re.compile(r"^[A-Za-z0-9._|-]{1,200}$")
CAS_ATTEMPTS = 16
# The limiter falls back to per-instance limits when storage is slow, so fail fast (shared.stores.sdkoptions).
_READ_TIMEOUT_SECONDS = 5
# The whole call, retries included (GATEWAY_STORAGE_TIMEOUT_SECONDS): a storage account that accepts
# connections and never answers must cost a request this long at most, not the SDK's retries times its timeouts.
DEFAULT_TIMEOUT_SECONDS = 2.0


@dataclass(slots=True)
class TableStats:
    """Storage transactions sent (each HTTP request, retries included) and calls that found storage unavailable."""

    transactions: int = 0
    unavailable: int = 0
    by_table: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {"transactions": self.transactions, "unavailable": self.unavailable, "by_table": dict(self.by_table)}


class TableAccount:
    """The worker's one service client and the tables it has made sure exist; built on first use."""

    def __init__(
        self,
        storage: StorageConfig,
        *,
        prefix: str,
        session: SessionProvider | None = None,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]{0,40}", prefix):
            raise ValueError("GATEWAY_TABLE_PREFIX: letters and digits, starting with a letter")
        self._storage = storage
        self._prefix = prefix
        self._session = session
        self._timeout = timeout_seconds
        self._service: TableServiceClient | None = None
        self._credential: AsyncTokenCredential | None = None
        self._tables: dict[str, TableClient] = {}
        self._lock: asyncio.Lock | None = None
        self.stats = TableStats()

    def _count(self, request: Any) -> None:
        # raw_request_hook runs after the SDK's retry policy: once per HTTP request actually sent.
        self.stats.transactions += 1
        path = str(request.http_request.url).split("?", 1)[0].rsplit("/", 1)[-1]
        table = path.split("(", 1)[0] or "service"
        self.stats.by_table[table] = self.stats.by_table.get(table, 0) + 1

    async def _build(self) -> TableServiceClient:
        from azure.data.tables.aio import TableServiceClient  # noqa: PLC0415 - SDK loads on first storage call

        session = await self._session() if self._session is not None else None
        options = client_options(session, read_timeout=_READ_TIMEOUT_SECONDS, count=self._count)
        if self._storage.connection_string:
            return TableServiceClient.from_connection_string(self._storage.connection_string, **options)
        from azure.identity.aio import DefaultAzureCredential  # noqa: PLC0415 - Azure only

        self._credential = DefaultAzureCredential(managed_identity_client_id=self._storage.client_id)
        return TableServiceClient(str(self._storage.table_service_uri), credential=self._credential, **options)

    async def table(self, name: str) -> TableClient:
        """The client of one of the gateway's tables, created in storage if it is missing (once per worker)."""
        client = self._tables.get(name)
        if client is not None:
            return client
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if name not in self._tables:
                if self._service is None:
                    self._service = await self._build()
                full_name = f"{self._prefix}{name}"
                async with self.boundary(f"create table {full_name}"):
                    await self._service.create_table_if_not_exists(full_name)
                self._tables[name] = self._service.get_table_client(full_name)
        return self._tables[name]

    @asynccontextmanager
    async def boundary(self, action: str) -> AsyncIterator[None]:
        """Map azure-core failures and calls slower than the timeout to `StoreUnavailable`.

        Callers catch the few answers they expect first.
        """
        try:
            async with asyncio.timeout(self._timeout):
                yield
        except TimeoutError:
            self.stats.unavailable += 1
            raise StoreUnavailable(f"Table Storage {action}: no answer within {self._timeout:g} s") from None
        except AzureError as exc:
            if _table_missing(exc):
                self._tables.clear()  # storage was reset under us: make sure of every table again
            self.stats.unavailable += 1
            status = getattr(exc, "status_code", None)
            # The type and status say enough; SDK messages can carry request URLs, never worth logging twice.
            raise StoreUnavailable(
                f"Table Storage {action}: {type(exc).__name__}{f' {status}' if status else ''}"
            ) from exc

    def stats_view(self) -> dict[str, object]:
        return self.stats.as_dict()

    async def close(self) -> None:
        if self._service is not None:
            await self._service.close()
            self._service = None
        self._tables.clear()
        if self._credential is not None:
            await self._credential.close()
            self._credential = None


# --- the few row operations every store module is made of ------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    values: Entity  # properties without PartitionKey / RowKey
    etag: str


def _row_of(entity: Any) -> Row:
    values = {k: v for k, v in entity.items() if k not in ("PartitionKey", "RowKey")}
    return Row(values, str(entity.metadata["etag"]))


def _table_missing(exc: AzureError) -> bool:
    return getattr(exc, "error_code", None) == "TableNotFound"


def _conflict(exc: TableTransactionError) -> bool:
    """A transaction refused for a stale ETag, an existing or a missing row: someone else changed it first."""
    return exc.status_code in (404, 409, 412) and not _table_missing(exc)


class TableRows:
    """Point reads, conditional writes, partition queries and transactions on one table, with errors mapped."""

    def __init__(self, account: TableAccount, table: str) -> None:
        self.account = account
        self.table = table

    async def get(self, partition: str, row: str) -> Row | None:
        client = await self.account.table(self.table)
        async with self.account.boundary(f"read {self.table}"):
            try:
                return _row_of(await client.get_entity(partition, row))
            except ResourceNotFoundError as exc:
                if _table_missing(exc):
                    raise  # the table itself is gone: the boundary reports it and forgets the table
                return None

    async def query(self, partition: str, prefix: str = "") -> list[tuple[str, Row]]:
        client = await self.account.table(self.table)
        where = "PartitionKey eq @p"
        params = {"p": partition}
        if prefix:
            # RowKeys sort as strings: every key with the prefix lies in [prefix, prefix with its last char + 1).
            where += " and RowKey ge @lo and RowKey lt @hi"
            params |= {"lo": prefix, "hi": prefix[:-1] + chr(ord(prefix[-1]) + 1)}
        async with self.account.boundary(f"query {self.table}"):
            return [(str(e["RowKey"]), _row_of(e)) async for e in client.query_entities(where, parameters=params)]

    async def create(self, partition: str, row: str, values: Entity) -> str | None:
        """Insert; the new ETag, or None if the row exists."""
        client = await self.account.table(self.table)
        async with self.account.boundary(f"insert into {self.table}"):
            try:
                meta = await client.create_entity({"PartitionKey": partition, "RowKey": row, **values})
            except ResourceExistsError:
                return None
        return str(meta["etag"])

    async def replace(self, partition: str, row: str, values: Entity, etag: str) -> str | None:
        """Replace if still at `etag`; the new ETag, or None if it changed or went away."""
        client = await self.account.table(self.table)
        async with self.account.boundary(f"update {self.table}"):
            try:
                meta = await client.update_entity(
                    {"PartitionKey": partition, "RowKey": row, **values},
                    mode=UpdateMode.REPLACE,
                    etag=etag,
                    match_condition=MatchConditions.IfNotModified,
                )
            except ResourceModifiedError:
                return None
            except ResourceNotFoundError as exc:
                if _table_missing(exc):
                    raise
                return None
        return str(meta["etag"])

    async def upsert(self, partition: str, row: str, values: Entity) -> None:
        client = await self.account.table(self.table)
        async with self.account.boundary(f"upsert into {self.table}"):
            await client.upsert_entity({"PartitionKey": partition, "RowKey": row, **values}, mode=UpdateMode.REPLACE)

    async def transact(self, operations: Iterable[tuple[Any, ...]]) -> bool:
        """One entity-group transaction; False if a condition failed (a concurrent change), nothing applied."""
        client = await self.account.table(self.table)
        async with self.account.boundary(f"transaction on {self.table}"):
            try:
                await client.submit_transaction(list(operations))
            except TableTransactionError as exc:
                if _conflict(exc):
                    return False
                raise
        return True


def if_match(etag: str) -> dict[str, Any]:
    return {"mode": UpdateMode.REPLACE, "etag": etag, "match_condition": MatchConditions.IfNotModified}


def checked_key(key: str) -> str:
    """`key` if Table Storage takes it as a PartitionKey or RowKey; ValueError otherwise."""
    if not SAFE_KEY.match(key):
        raise ValueError(f"{key!r} cannot be a Table Storage row key")
    return key
