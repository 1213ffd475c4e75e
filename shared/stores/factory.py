"""The one place that picks store implementations from configuration.

Table Storage when a storage endpoint is configured (a connection string
locally, `GATEWAY_STORAGE__tableServiceUri` with managed identity in Azure);
embedded otherwise. Embedded state is per process, so in Azure (many
instances) it is refused. The semantic cache's vector store: Cosmos DB when
`GATEWAY_COSMOS__accountEndpoint` is set, the embedded numpy store otherwise.
The audit log's append blobs: Blob Storage when `GATEWAY_STORAGE__blobServiceUri`
is set or the storage connection string reaches a blob service, memory otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from shared.config import Settings
from shared.errors import ConfigError
from shared.stores.embedded import (
    EmbeddedAuditStore,
    EmbeddedBreakerStore,
    EmbeddedCounterStore,
    EmbeddedLedgerStore,
    EmbeddedSubscriptionStore,
)
from shared.stores.protocols import AuditStore, BackendStateStore, CounterStore, LedgerStore, SubscriptionStore

log = logging.getLogger("gateway.stores")

if TYPE_CHECKING:
    import aiohttp

    from shared.cache.config import CacheConfig
    from shared.clock import Clock
    from shared.httpsession import SessionProvider
    from shared.stores.blobs import AppendLog
    from shared.stores.protocols import VectorStore


class Account(Protocol):
    """What backs a set of stores: something to count transactions on and to close."""

    def stats_view(self) -> dict[str, object]: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Stores:
    subscriptions: SubscriptionStore
    backends: BackendStateStore
    counters: CounterStore
    ledger: LedgerStore
    kind: str  # "embedded" | "tables"
    account: Account | None = None
    audit: AuditStore = field(default_factory=EmbeddedAuditStore)

    def stats(self) -> dict[str, object]:
        """Storage transactions sent so far (Table Storage only): the cost side of every design choice."""
        return {"kind": self.kind, **(self.account.stats_view() if self.account else {})}

    async def close(self) -> None:
        if self.account is not None:
            await self.account.close()


def build_stores(
    settings: Settings, *, session: Callable[[], Awaitable[aiohttp.ClientSession]] | None = None
) -> Stores:
    """The stores the configuration asks for; Table Storage clients share `session` (built lazily in the loop)."""
    if settings.storage is None:
        if settings.running_in_azure:
            raise ConfigError(
                [
                    "No storage configured while running in Azure: embedded stores keep state per instance, "
                    "so limits and breakers would not be shared. Set GATEWAY_STORAGE__tableServiceUri "
                    "(with GATEWAY_STORAGE__credential=managedidentity) or GATEWAY_STORAGE."
                ]
            )
        return Stores(
            EmbeddedSubscriptionStore(),
            EmbeddedBreakerStore(),
            EmbeddedCounterStore(),
            EmbeddedLedgerStore(),
            "embedded",
            audit=EmbeddedAuditStore(),
        )
    # The Azure SDK is imported only when Table Storage is configured: cold starts stay cheap otherwise.
    from shared.stores.tables.account import TableAccount  # noqa: PLC0415
    from shared.stores.tables.audit import TableAuditStore  # noqa: PLC0415
    from shared.stores.tables.backend_state import TableBackendStateStore  # noqa: PLC0415
    from shared.stores.tables.counters import TableCounterStore  # noqa: PLC0415
    from shared.stores.tables.ledger import TableLedgerStore  # noqa: PLC0415
    from shared.stores.tables.subscriptions import TableSubscriptionStore  # noqa: PLC0415

    try:
        account = TableAccount(settings.storage, prefix=settings.table_prefix, session=session)
    except ValueError as exc:
        raise ConfigError([str(exc)]) from None
    return Stores(
        TableSubscriptionStore(account),
        TableBackendStateStore(account),
        TableCounterStore(account),
        TableLedgerStore(account),
        "tables",
        account,
        audit=TableAuditStore(account),
    )


def build_vector_store(
    settings: Settings, cache: CacheConfig, *, clock: Clock, session: SessionProvider | None = None
) -> VectorStore:
    """The semantic cache's store; nothing connects here (Cosmos clients share `session`, built lazily)."""
    if settings.cosmos_endpoint:
        from shared.stores.cosmos import CosmosVectorStore  # noqa: PLC0415 - the Cosmos SDK loads only when used

        return CosmosVectorStore(
            endpoint=settings.cosmos_endpoint,
            database=settings.cosmos_database,
            container=settings.cosmos_container,
            dimensions=cache.dimensions,
            ttl_seconds=cache.ttl_seconds,
            clock=clock,
            key=settings.cosmos_key,
            client_id=settings.cosmos_client_id,
            session=session,
            index_type=cache.vector_index,
        )
    from shared.stores.vectors import EmbeddedVectorStore  # noqa: PLC0415 - loads with the cache, when it is on

    return EmbeddedVectorStore(clock=clock, max_entries=cache.max_entries, max_bytes=cache.max_bytes)


def build_append_log(settings: Settings, *, session: SessionProvider | None = None) -> AppendLog:
    """The audit log's files: Blob Storage when a blob endpoint is configured, in memory otherwise."""
    from shared.stores.blobs import AzureAppendLog, EmbeddedAppendLog, has_blob_endpoint  # noqa: PLC0415

    container = settings.prompt_log.container
    if settings.blob_service_uri:
        client_id = settings.storage.client_id if settings.storage else None
        return AzureAppendLog(container, service_uri=settings.blob_service_uri, client_id=client_id, session=session)
    conn = settings.storage.connection_string if settings.storage else None
    if conn and has_blob_endpoint(conn):
        return AzureAppendLog(container, connection_string=conn, session=session)
    if settings.running_in_azure:
        log.warning("no blob endpoint (GATEWAY_STORAGE__blobServiceUri): audit records stay in this instance's memory")
    return EmbeddedAppendLog()
