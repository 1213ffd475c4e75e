"""Append-only logs in Blob Storage (the audit log's hour files), and an embedded twin for local runs and tests.

Every Blob Storage call the gateway makes is here: `AzureAppendLog` writes
append blobs (one `append_block` per batch, the blob created on first write)
and reads them back for support look-ups; azure-core's errors become
`StoreUnavailable` in `_boundary` and nowhere else. `EmbeddedAppendLog` keeps
the same names and bytes in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Protocol

from shared.errors import StoreUnavailable
from shared.stores.sdkoptions import client_options

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential
    from azure.storage.blob.aio import BlobServiceClient, ContainerClient

    from shared.httpsession import SessionProvider

# One append_block carries at most 4 MiB on every service version Azurite and Azure accept.
MAX_APPEND_BYTES = 4 * 1024 * 1024
_READ_TIMEOUT_SECONDS = 10


class AppendLog(Protocol):
    """Named append-only files: append bytes, list names under a prefix, read one whole."""

    kind: str

    async def append(self, name: str, data: bytes) -> None: ...

    async def names(self, prefix: str) -> list[str]: ...

    async def read(self, name: str) -> bytes: ...

    async def close(self) -> None: ...


class EmbeddedAppendLog:
    """Per-process files in memory: a local run's audit log, readable by its own admin API."""

    kind = "embedded"

    def __init__(self) -> None:
        self.files: dict[str, bytearray] = {}

    async def append(self, name: str, data: bytes) -> None:
        self.files.setdefault(name, bytearray()).extend(data)

    async def names(self, prefix: str) -> list[str]:
        return sorted(n for n in self.files if n.startswith(prefix))

    async def read(self, name: str) -> bytes:
        return bytes(self.files.get(name, b""))

    async def close(self) -> None:
        return None


def has_blob_endpoint(connection_string: str) -> bool:
    """Whether a storage connection string reaches a blob service (Azurite's table-only strings do not)."""
    parts = {p.split("=", 1)[0].strip().lower() for p in connection_string.split(";") if "=" in p}
    if "blobendpoint" in parts or "usedevelopmentstorage" in parts:
        return True
    # An account without explicit endpoints reaches every service at its default address.
    return "accountname" in parts and not any(p.endswith("endpoint") for p in parts)


class AzureAppendLog:
    """Append blobs in one container; the client (and the container) made on first use."""

    kind = "blob"

    def __init__(
        self,
        container: str,
        *,
        connection_string: str | None = None,
        service_uri: str | None = None,
        client_id: str | None = None,
        session: SessionProvider | None = None,
    ) -> None:
        if not connection_string and not service_uri:
            raise ValueError("a connection string or a blob service URI is required")
        self._container_name = container
        self._connection_string = connection_string
        self._service_uri = service_uri
        self._client_id = client_id
        self._session = session
        self._service: BlobServiceClient | None = None
        self._container: ContainerClient | None = None
        self._credential: AsyncTokenCredential | None = None
        self._created: set[str] = set()
        self._lock = asyncio.Lock()
        self.transactions = 0

    def _count(self, _: Any) -> None:
        self.transactions += 1  # once per HTTP request sent, retries included

    async def _client(self) -> ContainerClient:
        if self._container is not None:
            return self._container
        async with self._lock:
            if self._container is None:
                from azure.storage.blob.aio import BlobServiceClient  # noqa: PLC0415 - SDK loads on first use

                session = await self._session() if self._session is not None else None
                options = client_options(session, read_timeout=_READ_TIMEOUT_SECONDS, count=self._count)
                if self._connection_string:
                    service = BlobServiceClient.from_connection_string(self._connection_string, **options)
                else:
                    from azure.identity.aio import DefaultAzureCredential  # noqa: PLC0415 - Azure only

                    self._credential = DefaultAzureCredential(managed_identity_client_id=self._client_id)
                    service = BlobServiceClient(str(self._service_uri), credential=self._credential, **options)
                container = service.get_container_client(self._container_name)
                from azure.core.exceptions import ResourceExistsError  # noqa: PLC0415

                async with self._boundary("create the container"):
                    # Usually there already: made by the Bicep, or by another instance.
                    with contextlib.suppress(ResourceExistsError):
                        await container.create_container()
                self._service, self._container = service, container
        return self._container

    @asynccontextmanager
    async def _boundary(self, action: str) -> AsyncIterator[None]:
        from azure.core.exceptions import AzureError  # noqa: PLC0415 - loaded with the SDK

        try:
            yield
        except AzureError as exc:
            status = getattr(exc, "status_code", None)
            detail = f"{type(exc).__name__}{f' {status}' if status else ''}"
            raise StoreUnavailable(f"Blob Storage {action}: {detail}") from exc

    async def append(self, name: str, data: bytes) -> None:
        from azure.core.exceptions import (  # noqa: PLC0415
            ResourceExistsError,
            ResourceModifiedError,
            ResourceNotFoundError,
        )

        container = await self._client()
        blob = container.get_blob_client(name)
        async with self._boundary(f"append to {name}"):
            if name not in self._created:
                # if_none_match="*": never truncate a blob another writer (or an earlier worker) started.
                with contextlib.suppress(ResourceExistsError, ResourceModifiedError):
                    await blob.create_append_blob(if_none_match="*", content_settings=_jsonl())
                self._created.add(name)
                if len(self._created) > 64:  # one per hour per instance: forget old hours
                    self._created = {name}
            try:
                await blob.append_block(data)
            except ResourceNotFoundError:
                self._created.discard(name)  # deleted under us (retention, a reset Azurite): make it again
                await blob.create_append_blob(if_none_match="*", content_settings=_jsonl())
                self._created.add(name)
                await blob.append_block(data)

    async def names(self, prefix: str) -> list[str]:
        container = await self._client()
        async with self._boundary(f"list {prefix}"):
            return sorted([b.name async for b in container.list_blobs(name_starts_with=prefix)])

    async def read(self, name: str) -> bytes:
        from azure.core.exceptions import ResourceNotFoundError  # noqa: PLC0415

        container = await self._client()
        async with self._boundary(f"read {name}"):
            try:
                downloader = await container.download_blob(name)
                data: bytes = await downloader.readall()
            except ResourceNotFoundError:
                return b""
        return data

    async def close(self) -> None:
        if self._service is not None:
            await self._service.close()
            self._service, self._container = None, None
        if self._credential is not None:
            await self._credential.close()
            self._credential = None


def _jsonl() -> Any:
    from azure.storage.blob import ContentSettings  # noqa: PLC0415

    return ContentSettings(content_type="application/x-ndjson")
