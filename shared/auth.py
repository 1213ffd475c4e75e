"""Subscription keys: where a caller puts one, how it is hashed at rest, and turning it into a `Caller`.

Keys carry at least 32 random bytes, so a single SHA-256 is enough to keep
them safe at rest (no password stretching needed) and lets a key be found by
its hash. Lookups are cached per instance for `key_cache_seconds` and then,
for up to `key_stale_seconds` more, served stale while a background lookup
refreshes them: a suspended, expired, deleted or rotated key stops working
within `key_cache_seconds` (plus one storage round trip for requests that
arrive during the refresh) while storage answers, and a slow or frozen storage
account delays no request for a key seen before by more than 0.1 s. When the
subscription store cannot be reached, a key seen before keeps the answer it
last had (requests keep flowing through a storage outage); a key never seen
gets 503 with Retry-After, since it can be neither accepted nor refused.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import math
import secrets
from collections.abc import Mapping
from typing import Protocol

from shared.clock import Clock
from shared.entra.tokens import looks_like_jwt
from shared.errors import Forbidden, ServiceUnavailable, StoreUnavailable, Unauthorized, retry_after_headers
from shared.models import AuthMode, Caller, Subscription, SubscriptionState, caller_for
from shared.stores.protocols import SubscriptionStore

log = logging.getLogger("gateway.auth")

KEY_PREFIX = "gw-"
_MAX_KEY_LENGTH = 256
_CACHE_LIMIT = 10_000
_STALE_RETRY_SECONDS = 5.0
# How long a request for a known key whose entry just expired waits for the fresh answer before the old one.
_REFRESH_WAIT_SECONDS = 0.1


def new_key() -> str:
    """A fresh subscription key: 32 random bytes, URL-safe, with a recognisable prefix."""
    return KEY_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_from_headers(headers: Mapping[str, str]) -> str | None:
    """The subscription key from `api-key`, `Ocp-Apim-Subscription-Key` or `Authorization: Bearer`."""
    key = headers.get("api-key") or headers.get("ocp-apim-subscription-key")
    if not key:
        authorization = headers.get("authorization", "")
        scheme, _, token = authorization.partition(" ")
        key = token.strip() if scheme.lower() == "bearer" else ""
    key = key.strip()
    return key or None


def bearer_of(headers: Mapping[str, str]) -> str | None:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def check_usable(subscription: Subscription, now: float) -> None:
    """403 for a subscription that exists but may not be used now, whichever way the caller proved it."""
    if subscription.state is not SubscriptionState.ACTIVE:
        raise Forbidden("This subscription is suspended.", code="subscription_suspended")
    # A non-finite expiry (stored before expiries were checked) never lets a key through by accident.
    expires_at = subscription.expires_at
    if expires_at is not None and (not math.isfinite(expires_at) or now >= expires_at):
        raise Forbidden("This subscription has expired.", code="subscription_expired")


class TokenCallers(Protocol):
    """Entra ID bearer tokens to callers (`shared.entra.callers`), when Entra is configured."""

    async def authenticate(self, token: str) -> Caller: ...

    def forget(self) -> None: ...


class Authenticator:
    """Keys to callers, through a per-instance cache that never makes a known key wait on storage.

    An entry is fresh for `cache_seconds`; then, for `stale_seconds` more, it is revalidated: one lookup per
    key goes to the store, the request that started it waits for it at most `_REFRESH_WAIT_SECONDS`, and
    every request meanwhile is answered from the entry (stale-while-revalidate). Only a key never seen, or
    one unused for longer than both, waits for the store, and that wait is bounded by the store's timeout.
    """

    def __init__(
        self,
        store: SubscriptionStore,
        clock: Clock,
        *,
        cache_seconds: float,
        stale_seconds: float = 300.0,
        tokens: TokenCallers | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self.tokens = tokens
        self._cache_seconds = cache_seconds
        self._stale_seconds = stale_seconds
        # key hash -> (answer, fresh until, served until)
        self._cache: dict[str, tuple[Subscription | None, float, float]] = {}
        self._refreshing: dict[str, asyncio.Task[bool]] = {}
        self._down_until = 0.0  # until then, stale entries are served without asking the store
        self.stale_answers = 0  # lookups answered from an expired entry because the store was slow or unavailable
        self.refreshes = 0  # background lookups started
        self._store_down = False

    async def authenticate(self, headers: Mapping[str, str]) -> Caller:
        if self.tokens is not None and "api-key" not in headers and "ocp-apim-subscription-key" not in headers:
            bearer = bearer_of(headers)
            if bearer is not None and looks_like_jwt(bearer):  # a key never has a JWT's shape
                return await self.tokens.authenticate(bearer)
        key = key_from_headers(headers)
        if key is None:
            raise Unauthorized(
                "Access denied: no subscription key. Send it in the 'api-key' header "
                "(or 'Ocp-Apim-Subscription-Key', or 'Authorization: Bearer <key>')."
            )
        if len(key) > _MAX_KEY_LENGTH:
            raise Unauthorized("Access denied: invalid subscription key.")
        key_hash = hash_key(key)
        subscription = await self._lookup(key_hash)
        if subscription is None or not (
            hmac.compare_digest(key_hash, subscription.primary_key_hash)
            or hmac.compare_digest(key_hash, subscription.secondary_key_hash)
        ):
            raise Unauthorized("Access denied: invalid subscription key.")
        check_usable(subscription, self._clock.now())
        if AuthMode.KEY not in subscription.auth_modes:
            raise Forbidden(
                "This subscription does not accept keys; call with an Entra ID token.", code="key_auth_disabled"
            )
        return caller_for(subscription)

    async def _lookup(self, key_hash: str) -> Subscription | None:
        now = self._clock.now()
        cached = self._cache.get(key_hash)
        if cached is not None:
            answer, fresh_until, served_until = cached
            if now < fresh_until:
                return answer
            if now < served_until:
                return await self._revalidate(key_hash, answer, now)
        try:
            return await self._fetch(key_hash)
        except StoreUnavailable as exc:
            if cached is None:
                raise ServiceUnavailable(
                    "The subscription key cannot be checked right now; retry shortly.",
                    code="auth_unavailable",
                    headers=retry_after_headers(_STALE_RETRY_SECONDS),
                ) from exc
            # Storage is down and this answer is older than the stale bound: keep serving it (requests keep
            # flowing through an outage), asking again at most every few seconds rather than on every request.
            self.stale_answers += 1
            self._cache[key_hash] = (cached[0], now, now + _STALE_RETRY_SECONDS)
            return cached[0]

    async def _revalidate(self, key_hash: str, answer: Subscription | None, now: float) -> Subscription | None:
        """An expired entry within the stale bound: the store's answer if it comes quickly, else the old one."""
        if now < self._down_until or key_hash in self._refreshing:
            self.stale_answers += 1  # storage is known to be slow or down, or a lookup for this key is on its way
            return answer
        self.refreshes += 1
        task = asyncio.get_running_loop().create_task(self._refresh(key_hash))
        self._refreshing[key_hash] = task  # held: the loop keeps only weak references
        # Healthy storage answers within the wait, so a revoked key is refused as soon as its entry expires;
        # slow storage costs this one request the wait, and every other request nothing.
        done, _ = await asyncio.wait({task}, timeout=_REFRESH_WAIT_SECONDS)
        if task in done and task.result():
            refreshed = self._cache.get(key_hash)
            return refreshed[0] if refreshed is not None else answer
        self.stale_answers += 1
        return answer

    async def _fetch(self, key_hash: str) -> Subscription | None:
        try:
            subscription = await self._store.find_by_key_hash(key_hash)
        except StoreUnavailable as exc:
            if not self._store_down:
                log.warning("subscription store unavailable (%s): answering from cached key lookups", exc)
                self._store_down = True
            raise
        if self._store_down:
            log.warning("subscription store reachable again")
            self._store_down = False
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()  # bounded: a flood of random keys cannot grow memory
        now = self._clock.now()
        fresh_until = now + self._cache_seconds
        self._cache[key_hash] = (subscription, fresh_until, fresh_until + self._stale_seconds)
        return subscription

    async def _refresh(self, key_hash: str) -> bool:
        """Look the key up again; False (and storage marked down for a while) if the store failed."""
        try:
            await self._fetch(key_hash)
        except StoreUnavailable:
            self._down_until = self._clock.now() + _STALE_RETRY_SECONDS  # logged once by _fetch
            return False
        finally:
            self._refreshing.pop(key_hash, None)
        return True

    async def close(self) -> None:
        """Stop background lookups (each is bounded by the store's timeout anyway)."""
        tasks = list(self._refreshing.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def forget(self) -> None:
        """Drop cached lookups (after an admin change on this instance)."""
        self._cache.clear()
        if self.tokens is not None:
            self.tokens.forget()
