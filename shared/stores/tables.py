"""Every Azure Table Storage call the gateway makes, behind the store protocols.

Layout (table names carry `GATEWAY_TABLE_PREFIX`):

    <prefix>subscriptions  PartitionKey "sub", RowKey "s-<id>"     the subscription (JSON, key hashes only)
                           PartitionKey "sub", RowKey "k-<hash>"   a copy per key, so a key is found in one read
    <prefix>backends       PartitionKey "breaker" | "probe", RowKey "<backend>|<deployment>"
    <prefix>limits         PartitionKey "<subscription id>", RowKey "rate" | "quota": Int64 counters

A subscription row and its key rows share a partition and change together in
one entity-group transaction, so a rotated key is never half-replaced. Every
read-modify-write is an ETag compare-and-swap (`IfNotModified`), retried on
`ResourceModifiedError`; creates race on `ResourceExistsError`.

The clients are built lazily inside the running loop on the gateway's one
aiohttp session (`AioHttpTransport(session=..., session_owner=False)`), with a
connection string locally and `DefaultAzureCredential` (the user-assigned
identity) in Azure. Tables are created once, on first use. azure-core
exceptions become `StoreUnavailable` here and nowhere else; every HTTP request
the SDK sends (retries included) is counted, for the cost figures.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.core.pipeline.transport import AioHttpTransport
from azure.data.tables import EdmType, EntityProperty, TableTransactionError, UpdateMode

from shared.errors import StoreUnavailable
from shared.models import Limits, QuotaPeriod, Subscription, SubscriptionState
from shared.stores.protocols import CounterChange, Counters, UsageBatch, UsageCounts, UsageKey, UsageRow, Versioned

if TYPE_CHECKING:
    import aiohttp
    from azure.core.credentials_async import AsyncTokenCredential
    from azure.data.tables.aio import TableClient, TableServiceClient

    from shared.config import StorageConfig

log = logging.getLogger("gateway.tables")

SessionProvider = Callable[[], Awaitable["aiohttp.ClientSession"]]
Entity = dict[str, Any]

SUBSCRIPTIONS, BACKENDS, LIMITS = "subscriptions", "backends", "limits"
_SUB_PARTITION = "sub"
_BREAKER_PARTITION, _PROBE_PARTITION = "breaker", "probe"
# Keys reach RowKeys from requests; Table Storage refuses '/', '\\', '#', '?' and control characters.
_SAFE_KEY = re.compile(r"^[A-Za-z0-9._|-]{1,200}$")
_KEY_HASH = re.compile(r"^[0-9a-f]{64}$")
_CAS_ATTEMPTS = 16
# The limiter falls back to per-instance limits when storage is slow, so fail fast rather than retry long.
_CLIENT_OPTIONS: dict[str, Any] = {"retry_total": 2, "retry_backoff_factor": 0.2, "retry_backoff_max": 2}
_TIMEOUTS = {"connection_timeout": 3, "read_timeout": 5}


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

    def __init__(self, storage: StorageConfig, *, prefix: str, session: SessionProvider | None = None) -> None:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]{0,40}", prefix):
            raise ValueError("GATEWAY_TABLE_PREFIX: letters and digits, starting with a letter")
        self._storage = storage
        self._prefix = prefix
        self._session = session
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
        transport = (
            AioHttpTransport(session=session, session_owner=False, **_TIMEOUTS)
            if session is not None
            else AioHttpTransport(**_TIMEOUTS)
        )
        options = {**_CLIENT_OPTIONS, "transport": transport, "raw_request_hook": self._count}
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
        """Map azure-core failures to `StoreUnavailable`; callers catch the few answers they expect first."""
        try:
            yield
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


# --- the few operations everything below is made of -------------------------------------------


@dataclass(frozen=True, slots=True)
class _Row:
    values: Entity  # properties without PartitionKey / RowKey
    etag: str


def _row(entity: Any) -> _Row:
    values = {k: v for k, v in entity.items() if k not in ("PartitionKey", "RowKey")}
    return _Row(values, str(entity.metadata["etag"]))


def _table_missing(exc: AzureError) -> bool:
    return getattr(exc, "error_code", None) == "TableNotFound"


def _conflict(exc: TableTransactionError) -> bool:
    """A transaction refused for a stale ETag, an existing or a missing row: someone else changed it first."""
    return exc.status_code in (404, 409, 412) and not _table_missing(exc)


class _Tables:
    """Point reads, conditional writes, partition queries and transactions on one table, with errors mapped."""

    def __init__(self, account: TableAccount, table: str) -> None:
        self.account = account
        self.table = table

    async def get(self, partition: str, row: str) -> _Row | None:
        client = await self.account.table(self.table)
        async with self.account.boundary(f"read {self.table}"):
            try:
                return _row(await client.get_entity(partition, row))
            except ResourceNotFoundError as exc:
                if _table_missing(exc):
                    raise  # the table itself is gone: the boundary reports it and forgets the table
                return None

    async def query(self, partition: str, prefix: str = "") -> list[tuple[str, _Row]]:
        client = await self.account.table(self.table)
        where = "PartitionKey eq @p"
        params = {"p": partition}
        if prefix:
            # RowKeys sort as strings: every key with the prefix lies in [prefix, prefix with its last char + 1).
            where += " and RowKey ge @lo and RowKey lt @hi"
            params |= {"lo": prefix, "hi": prefix[:-1] + chr(ord(prefix[-1]) + 1)}
        async with self.account.boundary(f"query {self.table}"):
            return [(str(e["RowKey"]), _row(e)) async for e in client.query_entities(where, parameters=params)]

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


def _if_match(etag: str) -> dict[str, Any]:
    return {"mode": UpdateMode.REPLACE, "etag": etag, "match_condition": MatchConditions.IfNotModified}


# --- subscriptions --------------------------------------------------------------------------------


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
        },
        separators=(",", ":"),
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
    )


def _sub_row(subscription_id: str) -> str:
    return f"s-{subscription_id}"


def _key_row(key_hash: str) -> str:
    return f"k-{key_hash}"


def _hashes(sub: Subscription) -> set[str]:
    return {sub.primary_key_hash, sub.secondary_key_hash}


class TableSubscriptionStore:
    def __init__(self, account: TableAccount) -> None:
        self._t = _Tables(account, SUBSCRIPTIONS)

    def _key_rows(self, sub: Subscription, data: str) -> list[tuple[Any, ...]]:
        return [
            ("upsert", {"PartitionKey": _SUB_PARTITION, "RowKey": _key_row(h), "subscription": sub.id, "data": data})
            for h in sorted(_hashes(sub))
        ]

    async def get(self, subscription_id: str) -> Subscription | None:
        if not _SAFE_KEY.match(subscription_id):
            return None
        row = await self._t.get(_SUB_PARTITION, _sub_row(subscription_id))
        return subscription_from_json(row.values["data"]) if row else None

    async def find_by_key_hash(self, key_hash: str) -> Subscription | None:
        if not _KEY_HASH.match(key_hash):
            return None
        row = await self._t.get(_SUB_PARTITION, _key_row(key_hash))
        return subscription_from_json(row.values["data"]) if row else None

    async def create(self, subscription: Subscription) -> None:
        if not _SAFE_KEY.match(subscription.id):
            raise ValueError(f"subscription id {subscription.id!r} has characters Table Storage refuses")
        data = subscription_to_json(subscription)
        row = {"PartitionKey": _SUB_PARTITION, "RowKey": _sub_row(subscription.id), "data": data}
        if not await self._t.transact([("create", row), *self._key_rows(subscription, data)]):
            raise ValueError(f"subscription {subscription.id} exists")

    async def modify(self, subscription_id: str, change: Callable[[Subscription], Subscription]) -> Subscription | None:
        if not _SAFE_KEY.match(subscription_id):
            return None
        for _ in range(_CAS_ATTEMPTS):
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
                    _if_match(row.etag),
                ),
                *self._key_rows(new, data),
                *(
                    ("delete", {"PartitionKey": _SUB_PARTITION, "RowKey": _key_row(h)})
                    for h in sorted(_hashes(old) - _hashes(new))
                ),
            ]
            if await self._t.transact(operations):
                return new
        raise StoreUnavailable(f"subscription {subscription_id} kept changing; gave up after {_CAS_ATTEMPTS} attempts")

    async def delete(self, subscription_id: str) -> bool:
        if not _SAFE_KEY.match(subscription_id):
            return False
        for _ in range(_CAS_ATTEMPTS):
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
                *(("delete", {"PartitionKey": _SUB_PARTITION, "RowKey": _key_row(h)}) for h in sorted(_hashes(sub))),
            ]
            if await self._t.transact(operations):
                return True
        raise StoreUnavailable(f"subscription {subscription_id} kept changing; gave up after {_CAS_ATTEMPTS} attempts")

    async def list(self) -> list[Subscription]:
        rows = await self._t.query(_SUB_PARTITION, prefix="s-")
        return sorted((subscription_from_json(r.values["data"]) for _, r in rows), key=lambda s: s.created_at)


# --- breakers and probes ----------------------------------------------------------------------


def _checked(key: str) -> str:
    if not _SAFE_KEY.match(key):
        raise ValueError(f"{key!r} cannot be a Table Storage row key")
    return key


class TableBackendStateStore:
    """Breaker records (compare-and-swap) and probe results (last write wins), side by side."""

    def __init__(self, account: TableAccount) -> None:
        self._t = _Tables(account, BACKENDS)

    async def load_all(self) -> dict[str, Versioned[dict[str, object]]]:
        rows = await self._t.query(_BREAKER_PARTITION)
        return {key: Versioned(json.loads(row.values["data"]), row.etag) for key, row in rows}

    async def load(self, key: str) -> Versioned[dict[str, object] | None]:
        row = await self._t.get(_BREAKER_PARTITION, _checked(key))
        return Versioned(json.loads(row.values["data"]), row.etag) if row else Versioned(None, None)

    async def save(self, key: str, record: dict[str, object], etag: str | None) -> str | None:
        values = {"data": json.dumps(record, separators=(",", ":"))}
        if etag is None:
            return await self._t.create(_BREAKER_PARTITION, _checked(key), values)
        return await self._t.replace(_BREAKER_PARTITION, _checked(key), values, etag)

    async def save_probe(self, key: str, record: dict[str, object]) -> None:
        await self._t.upsert(_PROBE_PARTITION, _checked(key), {"data": json.dumps(record, separators=(",", ":"))})

    async def load_probes(self) -> dict[str, dict[str, object]]:
        return {key: json.loads(row.values["data"]) for key, row in await self._t.query(_PROBE_PARTITION)}


# --- limit counters ---------------------------------------------------------------------------


def _counters(values: Mapping[str, Any]) -> dict[str, int]:
    # Int64 properties come back wrapped in EntityProperty; Int32 ones as plain ints.
    return {k: int(getattr(v, "value", v)) for k, v in values.items() if k not in ("Timestamp",)}


def _int64(values: Counters) -> Entity:
    return {k: EntityProperty(int(v), EdmType.INT64) for k, v in values.items()}


class TableCounterStore:
    def __init__(self, account: TableAccount) -> None:
        self._t = _Tables(account, LIMITS)

    async def update(self, partition: str, row: str, change: CounterChange) -> tuple[Counters, Counters]:
        _checked(partition)
        for _ in range(_CAS_ATTEMPTS):
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
        raise StoreUnavailable(f"limit counter {partition}/{row} kept changing; gave up after {_CAS_ATTEMPTS} attempts")

    async def read(self, partition: str, row: str) -> Counters:
        found = await self._t.get(_checked(partition), row)
        return _counters(found.values) if found else {}


# --- usage ledger -------------------------------------------------------------------------------

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
        self._t = _Tables(account, USAGE)

    async def apply(self, batch: UsageBatch) -> None:
        by_subscription: dict[str, list[tuple[str, UsageKey, UsageCounts]]] = {}
        for key, counts in batch.rows.items():
            _checked(key.subscription_id)
            row_key = usage_row_key(key)
            if not _SAFE_KEY.match(row_key):
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
        for _ in range(_CAS_ATTEMPTS):
            stored: dict[str, _Row] = {}
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
                operations.append(("update", {**entity_key, **values}, _if_match(found.etag)))
            if not operations or await self._t.transact(operations):
                return
        raise StoreUnavailable(f"usage rows of {subscription_id} kept changing; gave up after {_CAS_ATTEMPTS} attempts")

    async def rows(self, start_hour: int, end_hour: int, subscription_id: str | None = None) -> list[UsageRow]:
        where = "RowKey ge @lo and RowKey lt @hi"
        params: dict[str, Any] = {"lo": _hour_label(start_hour), "hi": _hour_label(end_hour)}
        if subscription_id is not None:
            if not _SAFE_KEY.match(subscription_id):
                return []
            where = "PartitionKey eq @p and " + where
            params["p"] = subscription_id
        client = await self._t.account.table(USAGE)
        async with self._t.account.boundary(f"query {USAGE}"):
            entities = [e async for e in client.query_entities(where, parameters=params)]
        rows = [_usage_row(str(e["PartitionKey"]), e) for e in entities]
        return [r for r in rows if start_hour <= r.key.hour < end_hour]
