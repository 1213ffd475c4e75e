"""How `CosmosVectorStore` maps azure-core errors at its one boundary.

cosmosdb-server answers 500 where the service answers 404 for a missing item,
so the "not there" answers are proven here against a fake container client
that raises what the SDK raises.
"""

from __future__ import annotations

from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError, ServiceRequestError

from shared.clock import ManualClock
from shared.errors import StoreUnavailable
from shared.stores.cosmos import CosmosVectorStore


class RaisingContainer:
    """Every call raises `error`, as the SDK's container client does when the service refuses or is gone."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def read_item(self, item: str, partition_key: str) -> dict[str, Any]:
        raise self.error

    async def delete_item(self, item: str, partition_key: str) -> None:
        raise self.error


def store_with(container: RaisingContainer) -> CosmosVectorStore:
    store = CosmosVectorStore(
        endpoint="https://unused.invalid",
        database="d",
        container="c",
        dimensions=3,
        ttl_seconds=60,
        clock=ManualClock(),
    )
    store._container = container  # type: ignore[assignment]  # a fake in place of the SDK's client: no network
    return store


async def test_a_missing_item_is_not_found_on_read_and_delete() -> None:
    store = store_with(RaisingContainer(ResourceNotFoundError("gone")))
    assert await store.get("scope", "key") is None
    assert await store.delete("scope", "key") is False


async def test_any_other_failure_is_store_unavailable() -> None:
    store = store_with(RaisingContainer(ServiceRequestError("no route to host")))
    with pytest.raises(StoreUnavailable, match="cosmos: point read failed: ServiceRequestError"):
        await store.get("scope", "key")
    with pytest.raises(StoreUnavailable, match="cosmos: delete failed: ServiceRequestError"):
        await store.delete("scope", "key")
