"""What the Azure Storage SDK clients (tables, blobs) are built with: few, short retries, bounded timeouts, the
gateway's one aiohttp session, and a hook that counts every HTTP request sent.

A storage account that is slow must cost a request little (the limiter falls back to per-instance limits), so the
clients fail fast rather than retry long. azure-core is imported on first use: cold start does not load the SDK.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import aiohttp

RETRIES: dict[str, Any] = {"retry_total": 2, "retry_backoff_factor": 0.2, "retry_backoff_max": 2}
CONNECT_TIMEOUT_SECONDS = 3


def client_options(
    session: aiohttp.ClientSession | None, *, read_timeout: float, count: Callable[[Any], None]
) -> dict[str, Any]:
    """Keyword arguments for a storage service client: retries, an aiohttp transport, the counting hook."""
    from azure.core.pipeline.transport import AioHttpTransport  # noqa: PLC0415 - SDK loads on first use

    timeouts = {"connection_timeout": CONNECT_TIMEOUT_SECONDS, "read_timeout": read_timeout}
    transport = (
        AioHttpTransport(session=session, session_owner=False, **timeouts)
        if session is not None
        else AioHttpTransport(**timeouts)
    )
    return {**RETRIES, "transport": transport, "raw_request_hook": count}
