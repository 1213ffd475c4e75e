"""How the gateway authenticates to backends: an API key, or a cached, refreshed Entra token."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError

from shared.backendauth import COGNITIVE_SERVICES_SCOPE, ApiKeyCredential, ManagedIdentityCredential, credentials_for
from shared.backendconfig import BackendAuth
from shared.clock import ManualClock
from shared.errors import NoBackendAvailable


class FakeEntra:
    """Stands in for DefaultAzureCredential (Entra ID cannot run here): same async get_token protocol."""

    def __init__(self, clock: ManualClock, lifetime: float = 3600) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.calls: list[tuple[str, ...]] = []
        self.fail = False

    async def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        self.calls.append(scopes)
        await asyncio.sleep(0)  # let concurrent callers pile up behind the lock
        if self.fail:
            raise ClientAuthenticationError("no identity")
        return AccessToken(f"token-{len(self.calls)}", int(self.clock.now() + self.lifetime))

    async def close(self) -> None:
        pass


async def test_the_token_is_fetched_once_and_reused_until_five_minutes_before_expiry() -> None:
    clock = ManualClock(1_000_000.0)
    entra = FakeEntra(clock)
    credential = ManagedIdentityCredential(clock, entra)  # type: ignore[arg-type]
    results = await asyncio.gather(*(credential.headers() for _ in range(10)))
    assert {r["Authorization"] for r in results} == {"Bearer token-1"}
    assert entra.calls == [(COGNITIVE_SERVICES_SCOPE,)]  # one refresh for ten concurrent callers
    clock.advance(3600 - 301)
    assert (await credential.headers())["Authorization"] == "Bearer token-1"
    clock.advance(2)  # inside the five-minute margin
    assert (await credential.headers())["Authorization"] == "Bearer token-2"


async def test_a_failed_refresh_keeps_a_still_valid_token_and_fails_clearly_once_it_expired() -> None:
    clock = ManualClock(1_000_000.0)
    entra = FakeEntra(clock)
    credential = ManagedIdentityCredential(clock, entra)  # type: ignore[arg-type]
    await credential.headers()
    entra.fail = True
    clock.advance(3600 - 100)  # due for refresh, not yet expired
    assert (await credential.headers())["Authorization"] == "Bearer token-1"
    clock.advance(200)
    with pytest.raises(NoBackendAvailable, match="managed identity"):
        await credential.headers()


async def test_api_key_backends_send_their_key_and_managed_identity_backends_share_one_token_cache() -> None:
    clock = ManualClock()
    creds = credentials_for(
        {
            "a": BackendAuth("api_key", "key-a", "A_KEY"),
            "b": BackendAuth("managed_identity"),
            "c": BackendAuth("managed_identity"),
        },
        clock,
    )
    assert isinstance(creds["a"], ApiKeyCredential)
    assert await creds["a"].headers() == {"api-key": "key-a"}
    assert creds["b"] is creds["c"]
