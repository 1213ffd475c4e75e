"""Subscription keys: where a caller puts one, how it is hashed at rest, and turning it into a `Caller`.

Keys carry at least 32 random bytes, so a single SHA-256 is enough to keep
them safe at rest (no password stretching needed) and lets a key be found by
its hash. Lookups are cached per instance for `key_cache_seconds`; a
suspended, expired, deleted or rotated key stops working within that time.
When the subscription store cannot be reached, a key seen before keeps the
answer it last had (requests keep flowing through a storage outage); a key
never seen gets 503, since it can be neither accepted nor refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
from collections.abc import Mapping
from typing import Protocol

from shared.clock import Clock
from shared.entra.tokens import looks_like_jwt
from shared.errors import Forbidden, ServiceUnavailable, StoreUnavailable, Unauthorized
from shared.models import AuthMode, Caller, Subscription, SubscriptionState, caller_for
from shared.stores.protocols import SubscriptionStore

log = logging.getLogger("gateway.auth")

KEY_PREFIX = "gw-"
_MAX_KEY_LENGTH = 256
_CACHE_LIMIT = 10_000
_STALE_RETRY_SECONDS = 5.0


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
    if subscription.expires_at is not None and now >= subscription.expires_at:
        raise Forbidden("This subscription has expired.", code="subscription_expired")


class TokenCallers(Protocol):
    """Entra ID bearer tokens to callers (`shared.entra.callers`), when Entra is configured."""

    async def authenticate(self, token: str) -> Caller: ...

    def forget(self) -> None: ...


class Authenticator:
    def __init__(
        self, store: SubscriptionStore, clock: Clock, *, cache_seconds: float, tokens: TokenCallers | None = None
    ) -> None:
        self._store = store
        self._clock = clock
        self.tokens = tokens
        self._cache_seconds = cache_seconds
        self._cache: dict[str, tuple[Subscription | None, float]] = {}
        self.stale_answers = 0  # lookups answered from an expired entry because the store was unavailable
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
        if cached is not None and cached[1] > now:
            return cached[0]
        try:
            subscription = await self._store.find_by_key_hash(key_hash)
        except StoreUnavailable as exc:
            if cached is None:
                raise ServiceUnavailable(
                    "The subscription key cannot be checked right now; retry shortly.", code="auth_unavailable"
                ) from exc
            if not self._store_down:
                log.warning("subscription store unavailable (%s): answering from cached key lookups", exc)
                self._store_down = True
            self.stale_answers += 1
            # Keep the old answer a little longer so an outage does not cost a failed call per request.
            self._cache[key_hash] = (cached[0], now + min(_STALE_RETRY_SECONDS, self._cache_seconds or 1.0))
            return cached[0]
        if self._store_down:
            log.warning("subscription store reachable again")
            self._store_down = False
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()  # bounded: a flood of random keys cannot grow memory
        self._cache[key_hash] = (subscription, now + self._cache_seconds)
        return subscription

    def forget(self) -> None:
        """Drop cached lookups (after an admin change on this instance)."""
        self._cache.clear()
        if self.tokens is not None:
            self.tokens.forget()
