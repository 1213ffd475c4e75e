"""Every Azure Cosmos DB call: the semantic cache's `VectorStore` on a NoSQL container with a vector index.

One item per cache entry, partitioned by scope, so a lookup reads one
partition: exact matches are point reads by id, semantic matches one
`SELECT TOP 1 ... ORDER BY VectorDistance(...)` query. In Azure the client
authenticates with the user-assigned managed identity and the container is
created by the Bicep (data-plane roles cannot create containers); with a key
(local emulators only) the store creates the database and container itself.
azure-core and azure-cosmos exceptions become `StoreUnavailable` in `_boundary`,
the one place this module maps them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.clock import Clock
from shared.errors import StoreUnavailable
from shared.stores.protocols import CacheEntry, Match

if TYPE_CHECKING:
    from azure.cosmos.aio import ContainerProxy, CosmosClient

    from shared.httpsession import SessionProvider
    from shared.stores.protocols import Vector

log = logging.getLogger("gateway.cosmos")

PARTITION_KEY_PATH = "/scope"
EMBEDDING_PATH = "/embedding"
# Items have an expiry of their own (`expires_at`) that every read checks against the gateway's
# clock, because the service deletes expired items in the background, not at the instant they expire.
NEAREST_QUERY = (
    "SELECT TOP 1 c.id, c.scope, c.prompt, c.response, c.prompt_tokens, c.completion_tokens, c.created_at, "
    "c.expires_at, VectorDistance(c.embedding, @v) AS score "
    "FROM c WHERE c.scope = @scope AND c.expires_at > @now AND IS_DEFINED(c.embedding) "
    "ORDER BY VectorDistance(c.embedding, @v)"
)


@dataclass(slots=True)
class _Answer:
    missing: bool = False  # the service answered 404 and the caller said that is an answer, not a failure


@asynccontextmanager
async def _boundary(action: str, *, missing_ok: bool = False) -> AsyncIterator[_Answer]:
    """Map azure-core failures to `StoreUnavailable`; with `missing_ok` a 404 sets `missing` instead.

    A caller that expects "not there" (a point read, a delete) asks for it and
    reads `answer.missing` after the block; everything else is unavailability.
    """
    from azure.core.exceptions import AzureError, ResourceNotFoundError  # noqa: PLC0415 - SDKs load on first use

    answer = _Answer()
    try:
        yield answer
    except AzureError as exc:
        if missing_ok and isinstance(exc, ResourceNotFoundError):
            answer.missing = True
            return
        raise StoreUnavailable(f"cosmos: {action}: {type(exc).__name__}") from exc


def vector_embedding_policy(dimensions: int) -> dict[str, Any]:
    """The container's vector policy: float32 vectors at /embedding, cosine (VectorDistance answers similarity)."""
    return {
        "vectorEmbeddings": [
            {"path": EMBEDDING_PATH, "dataType": "float32", "distanceFunction": "cosine", "dimensions": dimensions}
        ]
    }


def indexing_policy(index_type: str = "quantizedFlat") -> dict[str, Any]:
    """Index everything but the vector's elements (the vector index covers them); `quantizedFlat` or `diskANN`."""
    return {
        "indexingMode": "consistent",
        "automatic": True,
        "includedPaths": [{"path": "/*"}],
        "excludedPaths": [{"path": '/"_etag"/?'}, {"path": f"{EMBEDDING_PATH}/*"}, {"path": "/response/?"}],
        "vectorIndexes": [{"path": EMBEDDING_PATH, "type": index_type}],
    }


class CosmosVectorStore:
    kind = "cosmos"

    def __init__(
        self,
        *,
        endpoint: str,
        database: str,
        container: str,
        dimensions: int,
        ttl_seconds: int,
        clock: Clock,
        key: str | None = None,
        client_id: str | None = None,
        session: SessionProvider | None = None,
        index_type: str = "quantizedFlat",
    ) -> None:
        self._endpoint = endpoint
        self._database = database
        self._container_name = container
        self._dimensions = dimensions
        self._ttl = ttl_seconds
        self._clock = clock
        self._key = key
        self._client_id = client_id
        self._session = session
        self._index_type = index_type
        self._client: CosmosClient | None = None
        self._credential: Any = None
        self._container: ContainerProxy | None = None
        self._lock = asyncio.Lock()

    async def _open(self) -> ContainerProxy:
        """The container client, built on first use (the SDK import and the credential are not cold-start costs)."""
        if self._container is not None:
            return self._container
        async with self._lock:
            if self._container is not None:
                return self._container
            from azure.cosmos import PartitionKey  # noqa: PLC0415 - lazy: SDKs load on first use
            from azure.cosmos.aio import CosmosClient  # noqa: PLC0415

            options: dict[str, Any] = {
                # A cache lookup that waits is worse than a miss: fail fast, the cache stage bypasses.
                "connection_timeout": 5,
                "retry_throttle_total": 1,
                "retry_throttle_backoff_max": 1,
                "no_response_on_write": True,
            }
            if self._session is not None:
                from azure.core.pipeline.transport import AioHttpTransport  # noqa: PLC0415

                options["transport"] = AioHttpTransport(session=await self._session(), session_owner=False)
            if self._key is not None:
                client = CosmosClient(self._endpoint, self._key, enable_endpoint_discovery=False, **options)
            else:
                from azure.identity.aio import DefaultAzureCredential  # noqa: PLC0415

                self._credential = DefaultAzureCredential(managed_identity_client_id=self._client_id)
                client = CosmosClient(self._endpoint, self._credential, **options)
            self._client = client
            try:
                async with _boundary(f"cannot open {self._database}/{self._container_name}"):
                    if self._key is not None:
                        database = await client.create_database_if_not_exists(self._database)
                        container = await database.create_container_if_not_exists(
                            self._container_name,
                            PartitionKey(path=PARTITION_KEY_PATH),
                            default_ttl=self._ttl,
                            indexing_policy=indexing_policy(self._index_type),
                            vector_embedding_policy=vector_embedding_policy(self._dimensions),
                        )
                    else:
                        container = client.get_database_client(self._database).get_container_client(
                            self._container_name
                        )
                    properties = await container.read()
                _check_policy(properties, self._dimensions)
            except StoreUnavailable:
                await self.close()  # the next lookup tries again from the start
                raise
            self._container = container
            return container

    async def get(self, scope: str, key: str) -> CacheEntry | None:
        container = await self._open()
        async with _boundary("point read failed", missing_ok=True) as answer:
            item = await container.read_item(key, partition_key=scope)
        if answer.missing:
            return None
        entry = _entry(item)
        return entry if entry.expires_at > self._clock.now() else None

    async def nearest(self, scope: str, vector: Vector, min_similarity: float) -> Match | None:
        container = await self._open()
        parameters: list[dict[str, Any]] = [
            {"name": "@v", "value": [float(x) for x in vector]},
            {"name": "@scope", "value": scope},
            {"name": "@now", "value": self._clock.now()},
        ]
        async with _boundary("vector query failed"):
            items = [
                item async for item in container.query_items(NEAREST_QUERY, parameters=parameters, partition_key=scope)
            ]
        if not items:
            return None
        similarity = float(items[0]["score"])
        if similarity < min_similarity:
            return None
        return Match(_entry(items[0]), min(similarity, 1.0))

    async def put(self, entry: CacheEntry, vector: Vector | None) -> None:
        container = await self._open()
        item: dict[str, Any] = {
            "id": entry.key,
            "scope": entry.scope,
            "prompt": entry.prompt,
            "response": entry.response.decode(),  # JSON text: stored as is, readable in the portal
            "prompt_tokens": entry.prompt_tokens,
            "completion_tokens": entry.completion_tokens,
            "created_at": entry.created_at,
            "expires_at": entry.expires_at,
            "ttl": max(1, int(entry.expires_at - entry.created_at + 0.999)),
        }
        if vector is not None:  # without one the entry is found by its exact key only
            item["embedding"] = [float(x) for x in vector]
        async with _boundary("upsert failed"):
            await container.upsert_item(item)

    async def delete(self, scope: str, key: str) -> bool:
        container = await self._open()
        async with _boundary("delete failed", missing_ok=True) as answer:
            await container.delete_item(key, partition_key=scope)
        return not answer.missing

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
        if self._credential is not None:
            await self._credential.close()
        self._client = self._container = self._credential = None


def _entry(item: dict[str, Any]) -> CacheEntry:
    try:
        return CacheEntry(
            scope=str(item["scope"]),
            key=str(item["id"]),
            prompt=str(item["prompt"]),
            response=str(item["response"]).encode(),
            prompt_tokens=int(item["prompt_tokens"]),
            completion_tokens=int(item["completion_tokens"]),
            created_at=float(item["created_at"]),
            expires_at=float(item["expires_at"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreUnavailable(f"cosmos: malformed cache item: {type(exc).__name__}") from exc


def _check_policy(properties: dict[str, Any], dimensions: int) -> None:
    """Refuse a container whose vectors have other dimensions: every lookup would fail or mean nothing."""
    policy = properties.get("vectorEmbeddingPolicy") or {}
    paths = {v.get("path"): v for v in policy.get("vectorEmbeddings", []) if isinstance(v, dict)}
    found = paths.get(EMBEDDING_PATH)
    if found is None:
        raise StoreUnavailable(f"cosmos: the container has no vector embedding policy for {EMBEDDING_PATH}")
    if int(found.get("dimensions", 0)) != dimensions:
        raise StoreUnavailable(
            f"cosmos: the container's vectors have {found.get('dimensions')} dimensions, the embedder {dimensions}"
        )
