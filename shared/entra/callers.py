"""A valid token's object id (`oid`) -> the subscription that lists it -> a `Caller`; refusals logged with a reason.

Invalid tokens get 401 and valid tokens of no subscription 403, each in the
OpenAI envelope; the log line names the reason and the oid (never the
token). Lookups by oid are cached per instance like key lookups
(GATEWAY_KEY_CACHE_SECONDS), so an identity removed from a subscription
stops working everywhere within that time.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from shared.auth import check_usable
from shared.entra.tokens import Identity, TokenValidator, identify
from shared.errors import Forbidden, ServiceUnavailable, StoreUnavailable
from shared.models import AuthMode, Caller, Subscription, caller_for

if TYPE_CHECKING:
    from shared.clock import Clock
    from shared.stores.protocols import SubscriptionStore

log = logging.getLogger("gateway.entra")

_CACHE_LIMIT = 10_000


class EntraCallers:
    def __init__(
        self, validator: TokenValidator, store: SubscriptionStore, clock: Clock, *, cache_seconds: float
    ) -> None:
        self.validator = validator
        self._store = store
        self._clock = clock
        self._cache_seconds = cache_seconds
        self._cache: dict[str, tuple[Subscription | None, float]] = {}

    async def identify(self, token: str) -> Identity:
        """The token's identity, or 401 (invalid) / 503 (signing keys unreachable and none known)."""
        return await identify(self.validator, token, purpose="bearer token")

    async def authenticate(self, token: str) -> Caller:
        identity = await self.identify(token)
        required = self.validator.config.required_roles
        if required and not identity.has_any(required):
            log.warning("bearer token refused: oid %s has none of the required roles %s", identity.oid, required)
            raise Forbidden("This token carries none of the roles the gateway requires.", code="role_required")
        subscription = await self._lookup(identity.oid)
        if subscription is None or identity.oid not in subscription.identities:
            log.warning(
                "bearer token refused: oid %s (app %s) belongs to no subscription", identity.oid, identity.app_id
            )
            raise Forbidden(
                f"This identity (oid {identity.oid}) is not allowed to use the gateway: no subscription lists it.",
                code="identity_not_allowed",
            )
        check_usable(subscription, self._clock.now())
        if AuthMode.ENTRA not in subscription.auth_modes:
            log.warning("bearer token refused: subscription %s does not accept tokens", subscription.id)
            raise Forbidden("This subscription does not accept Entra ID tokens.", code="token_auth_disabled")
        return caller_for(subscription, mode=AuthMode.ENTRA, principal=identity.oid)

    async def _lookup(self, oid: str) -> Subscription | None:
        now = self._clock.now()
        cached = self._cache.get(oid)
        if cached is not None and cached[1] > now:
            return cached[0]
        try:
            subscription = await self._store.find_by_identity(oid)
        except StoreUnavailable as exc:
            if cached is None:
                raise ServiceUnavailable(
                    "The identity cannot be checked right now; retry shortly.", code="auth_unavailable"
                ) from exc
            return cached[0]  # an identity seen before keeps its last answer through a storage outage
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[oid] = (subscription, now + self._cache_seconds)
        return subscription

    def forget(self) -> None:
        self._cache.clear()
