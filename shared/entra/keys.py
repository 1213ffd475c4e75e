"""The tenant's signing keys (JWKS): fetched over the gateway's HTTP session, cached, refetched when a key id is new.

Entra rolls its keys: a token signed with a key this instance has not seen
yet is the signal to fetch the set again. Unknown key ids come from
attackers too, so refetching is bounded twice: at most once per
REFETCH_PER_KID_SECONDS for the same unknown kid, and never more often than
MIN_REFETCH_SECONDS whatever the kid. The whole set is also refreshed every
REFRESH_SECONDS so retired keys drop out. A fetch that fails keeps the keys
already known (a token signed with one of them still validates).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from shared.errors import GatewayException

if TYPE_CHECKING:
    from shared.clock import Clock
    from shared.httpsession import SessionProvider

log = logging.getLogger("gateway.entra")

REFRESH_SECONDS = 24 * 3600.0
REFETCH_PER_KID_SECONDS = 300.0
MIN_REFETCH_SECONDS = 10.0
FETCH_TIMEOUT_SECONDS = 5.0
_MAX_REMEMBERED_MISSES = 1000


class KeysUnavailable(GatewayException):
    """The signing keys could not be fetched and none are known yet."""


class SigningKeys:
    def __init__(self, url: str, session: SessionProvider, clock: Clock) -> None:
        self._url = url
        self._session = session
        self._clock = clock
        self._keys: dict[str, Any] = {}  # kid -> jwt.PyJWK
        self._fetched_at: float | None = None
        self._last_attempt = float("-inf")
        self._misses: dict[str, float] = {}  # unknown kid -> when it last caused a fetch
        self._lock: asyncio.Lock | None = None
        self.fetches = 0

    async def key(self, kid: str) -> Any | None:
        """The signing key with this id (a `jwt.PyJWK`), or None if the tenant has no such key."""
        now = self._clock.now()
        stale = self._fetched_at is None or now - self._fetched_at >= REFRESH_SECONDS
        if stale and now - self._last_attempt >= MIN_REFETCH_SECONDS:
            await self._fetch(now, reason="refresh")
        if not self._keys:
            raise KeysUnavailable("no signing keys known yet (the last fetch failed)")
        found = self._keys.get(kid)
        if found is not None:
            return found
        last_miss = self._misses.get(kid)
        if last_miss is not None and now - last_miss < REFETCH_PER_KID_SECONDS:
            return None
        if now - self._last_attempt < MIN_REFETCH_SECONDS:
            return None
        if len(self._misses) >= _MAX_REMEMBERED_MISSES:
            self._misses.clear()  # bounded: a flood of random kids cannot grow memory
        self._misses[kid] = now
        await self._fetch(now, reason="unknown key id")
        return self._keys.get(kid)

    async def _fetch(self, now: float, *, reason: str) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._last_attempt >= now:
                return  # a concurrent caller fetched while this one waited
            self._last_attempt = now
            self.fetches += 1
            try:
                document = await self._download()
                keys = _parse(document)
            except (OSError, TimeoutError, ValueError) as exc:
                log.warning("signing keys not fetched from %s (%s): %s", self._url, reason, exc)
                if not self._keys:
                    raise KeysUnavailable(f"signing keys unavailable: {exc}") from exc
                return
            self._keys = keys
            self._fetched_at = now
            log.info("signing keys fetched (%s): %d keys", reason, len(keys))

    async def _download(self) -> Any:
        import aiohttp  # noqa: PLC0415 - lazy, as everywhere the session is used

        session = await self._session()
        try:
            async with session.get(
                self._url, timeout=aiohttp.ClientTimeout(total=FETCH_TIMEOUT_SECONDS), allow_redirects=False
            ) as response:
                if response.status != 200:
                    raise ValueError(f"HTTP {response.status}")
                return json.loads(await response.read())
        except aiohttp.ClientError as exc:
            raise OSError(f"{type(exc).__name__}") from exc


def _parse(document: Any) -> dict[str, Any]:
    """RSA signing keys by kid; anything else in the set (encryption keys, other types) is left out."""
    import jwt  # noqa: PLC0415 - PyJWT loads with the first token

    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document")
    keys: dict[str, Any] = {}
    for item in document["keys"]:
        if not isinstance(item, dict) or item.get("kty") != "RSA" or item.get("use", "sig") != "sig":
            continue
        kid = item.get("kid")
        if not isinstance(kid, str) or not kid:
            continue
        try:
            # Pinned to RS256 whatever the key says: the token's own header never picks the algorithm.
            keys[kid] = jwt.PyJWK({k: v for k, v in item.items() if k != "alg"}, algorithm="RS256")
        except jwt.PyJWTError as exc:
            log.warning("signing key %s skipped: %s", kid, exc)
    return keys
