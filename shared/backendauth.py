"""How the gateway proves itself to a backend: managed identity (Entra token) or an API key from an app setting.

Each is a one-method object chosen by the backend's `auth` config. The Entra
token is fetched with azure-identity's async `DefaultAzureCredential`, cached,
and refreshed five minutes before it expires; one refresh runs at a time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from shared.backendconfig import BackendAuth
from shared.clock import Clock
from shared.errors import NoBackendAvailable

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential

log = logging.getLogger("gateway.backendauth")

COGNITIVE_SERVICES_SCOPE = "https://cognitiveservices.azure.com/.default"
_REFRESH_MARGIN = 300.0


class BackendCredential(Protocol):
    async def headers(self) -> Mapping[str, str]: ...


class ApiKeyCredential:
    __slots__ = ("_headers",)

    def __init__(self, key: str) -> None:
        self._headers = {"api-key": key}

    async def headers(self) -> Mapping[str, str]:
        return self._headers


class ManagedIdentityCredential:
    """A cached bearer token for Azure OpenAI, shared by every managed-identity backend."""

    def __init__(self, clock: Clock, credential: AsyncTokenCredential | None = None) -> None:
        self._clock = clock
        self._credential = credential
        self._headers: dict[str, str] = {}
        self._expires_on = 0.0
        self._lock = asyncio.Lock()

    async def headers(self) -> Mapping[str, str]:
        if self._clock.now() < self._expires_on - _REFRESH_MARGIN:
            return self._headers
        async with self._lock:
            if self._clock.now() >= self._expires_on - _REFRESH_MARGIN:
                await self._refresh()
        return self._headers

    async def _refresh(self) -> None:
        from azure.core.exceptions import ClientAuthenticationError  # noqa: PLC0415 - lazy: cold start

        if self._credential is None:
            from azure.identity.aio import DefaultAzureCredential  # noqa: PLC0415 - lazy: cold start

            self._credential = DefaultAzureCredential()
        try:
            token = await self._credential.get_token(COGNITIVE_SERVICES_SCOPE)
        except ClientAuthenticationError as exc:
            log.error("could not get an Entra token for Azure OpenAI: %s", exc.message)
            if self._clock.now() < self._expires_on:
                return  # the old token is still valid: use it and try again next time
            raise NoBackendAvailable(
                "The gateway could not authenticate to its backends (managed identity).",
                code="backend_auth_failed",
            ) from exc
        self._headers = {"Authorization": f"Bearer {token.token}"}
        self._expires_on = float(token.expires_on)

    async def close(self) -> None:
        if self._credential is not None:
            await self._credential.close()


def credentials_for(auth_configs: Mapping[str, BackendAuth], clock: Clock) -> dict[str, BackendCredential]:
    """One credential per backend name; managed-identity backends share one token cache."""
    shared: ManagedIdentityCredential | None = None
    result: dict[str, BackendCredential] = {}
    for name, auth in auth_configs.items():
        if auth.type == "api_key" and auth.api_key:
            result[name] = ApiKeyCredential(auth.api_key)
        else:
            shared = shared or ManagedIdentityCredential(clock)
            result[name] = shared
    return result
