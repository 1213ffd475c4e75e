"""The composition root: one `Gateway` per worker, holding every stage and the one shared HTTP session.

It is built lazily, inside the running event loop, on the first request
(`get_gateway()`), so importing the app costs little and a bad configuration
is reported with every problem on first use and at the local host's start.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import secrets
import socket
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from shared.affinity import DAY, Affinity
from shared.auth import Authenticator
from shared.backendauth import ManagedIdentityCredential, credentials_for
from shared.breaker import BreakerBoard
from shared.budgets.alerts import AlertSender
from shared.budgets.keeper import BudgetKeeper
from shared.capacity import Capacity
from shared.clock import SYSTEM_CLOCK, Clock
from shared.config import Settings, get_settings
from shared.entra.callers import EntraCallers
from shared.entra.tokens import TokenValidator
from shared.ledger import Ledger
from shared.limits.limiter import Limiter, SharedLimiter
from shared.meter import Meter
from shared.promptlog.log import PromptLog
from shared.proxy import Proxy
from shared.routing import Router
from shared.stores.factory import Stores, build_append_log, build_stores, build_vector_store
from shared.telemetry import Telemetry

if TYPE_CHECKING:
    import aiohttp

    from shared.cache.stage import Cache
    from shared.contentsafety.stage import ContentSafety
    from shared.relay import RelayedStream

log = logging.getLogger("gateway")

# How long an idle backend connection is kept for the next call (aiohttp's default is 15 s).
KEEPALIVE_SECONDS = 30.0

# How long `close()` waits for streams to be settled and metered before it writes the ledger.
DRAIN_SECONDS = 5.0


class Gateway:
    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock = SYSTEM_CLOCK,
        stores: Stores | None = None,
        instance_id: str | None = None,
        limiter: Limiter | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.instance_id = instance_id or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self._session: aiohttp.ClientSession | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._open_streams: set[RelayedStream] = set()
        self.stores = stores or build_stores(settings, session=self.session)
        self.tokens: TokenValidator | None = None
        entra_callers: EntraCallers | None = None
        if settings.entra is not None:
            self.tokens = TokenValidator(settings.entra, self.session, clock)
            entra_callers = EntraCallers(
                self.tokens, self.stores.subscriptions, clock, cache_seconds=settings.key_cache_seconds
            )
        self.authenticator = Authenticator(
            self.stores.subscriptions,
            clock,
            cache_seconds=settings.key_cache_seconds,
            stale_seconds=settings.key_stale_seconds,
            tokens=entra_callers,
        )
        self.breakers = BreakerBoard(
            settings.breaker,
            self.stores.backends,
            clock,
            self.instance_id,
            sync_seconds=settings.breaker_sync_seconds,
        )
        self.router = Router(settings.backends, self.breakers, clock)
        self.affinity = Affinity(self.stores.affinity, clock, ttl_seconds=settings.affinity_days * DAY)
        self.credentials = credentials_for({b.name: b.auth for b in settings.backends}, clock)
        self.capacity = Capacity(settings.capacity)
        self.proxy = Proxy(
            self.router,
            self.breakers,
            self.credentials,
            self.session,
            clock,
            capacity=self.capacity,
            max_attempts=settings.max_attempts,
            default_throttle_seconds=settings.default_throttle_seconds,
        )
        self.limiter: Limiter = limiter or SharedLimiter(
            self.stores.counters,
            clock,
            window_seconds=settings.rate_window_seconds,
            default_completion_tokens=settings.default_completion_tokens,
            fail_closed=settings.limits_fail_closed,
        )
        self.telemetry = Telemetry(settings, instance_id=self.instance_id, breakers=self.breakers)
        self.ledger = Ledger(
            self.stores.ledger,
            clock,
            writer=self.instance_id,
            prices=settings.prices,
            deployments=settings.deployments,
            flush_seconds=settings.ledger_flush_seconds,
        )
        self.budgets = BudgetKeeper(
            self.stores.counters,
            clock,
            AlertSender(
                self.session,
                webhook_url=settings.budget_webhook_url,
                webhook_secret=settings.budget_webhook_secret,
                metrics=self.telemetry,
            ),
            prices=settings.prices,
            deployments=settings.deployments,
            sync_seconds=settings.budget_sync_seconds,
        )
        self.prompt_log = PromptLog(
            settings.prompt_log,
            build_append_log(settings, session=self.session),
            clock,
            instance_id=self.instance_id,
            on_count=self.telemetry.count_prompt_log,
        )
        # With nothing to export metrics to, the meter skips telemetry altogether.
        self.meter = Meter(
            self.limiter,
            self.telemetry if self.telemetry.enabled else None,
            self.ledger,
            budgets=self.budgets,
            prices=settings.prices,
            audit=self.prompt_log,
        )
        self.content_safety: ContentSafety | None = None
        self._content_safety_credential: ManagedIdentityCredential | None = None
        if settings.content_safety is not None:
            from shared.contentsafety.stage import ContentSafety  # noqa: PLC0415 - loads only when it is on

            if settings.content_safety.api_key is None:
                self._content_safety_credential = ManagedIdentityCredential(clock)
            self.content_safety = ContentSafety(
                settings.content_safety,
                self.session,
                credential=self._content_safety_credential,
                on_result=self.telemetry.count_content_safety,
            )
        self.cache: Cache | None = None
        if settings.cache is not None:
            from shared.cache.stage import build_cache  # noqa: PLC0415 - the cache's modules load only when it is on

            # Cheap: the model and Cosmos load on first use.
            store = build_vector_store(settings, settings.cache, clock=clock, session=self.session)
            self.cache = build_cache(settings.cache, self.proxy, store, clock)

    async def session(self) -> aiohttp.ClientSession:
        """The worker's one HTTP session, created inside the running loop on first use."""
        if self._session is None or self._session.closed:
            import aiohttp  # noqa: PLC0415 - lazy: keeps `import function_app` cheap

            # Unlimited here: `shared.capacity` bounds calls per backend, streams and short calls apart, so
            # aiohttp's `connect` timeout never includes a wait for a pooled connection (which a full pool
            # would turn into a "backend" timeout). Idle connections are kept for reuse.
            connector = aiohttp.TCPConnector(
                limit=0, ttl_dns_cache=300, enable_cleanup_closed=True, keepalive_timeout=KEEPALIVE_SECONDS
            )
            # No cookie jar: a backend's cookies (affinity and the like) must not pass from one caller's
            # request to the next, and skipping the jar saves work on every call.
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
            )
        return self._session

    async def start(self) -> None:
        """Work done once per worker before serving: create the local demo subscription if asked to."""
        if self.settings.demo_key:
            from shared.admin.subscriptions import ensure_demo_subscription  # noqa: PLC0415 - local runs only

            await ensure_demo_subscription(self.stores.subscriptions, self.settings.demo_key)

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run work that must finish even if the caller's task is cancelled; `close()` waits for it."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)  # held: the loop keeps only weak references
        task.add_done_callback(self._background.discard)

    def stream_opened(self, stream: RelayedStream) -> None:
        self._open_streams.add(stream)

    def stream_settled(self, stream: RelayedStream) -> None:
        self._open_streams.discard(stream)

    async def drain(self, seconds: float = DRAIN_SECONDS) -> None:
        """Cut the streams still open and wait (bounded) for every stream to be settled and metered."""
        for stream in list(self._open_streams):
            stream.abort()
        deadline = asyncio.get_running_loop().time() + seconds
        while self._background or self._open_streams:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                log.warning(
                    "closing with %d stream(s) not yet settled; their usage may be missing from the ledger",
                    len(self._open_streams) + len(self._background),
                )
                return
            if self._background:
                await asyncio.wait(set(self._background), timeout=left)
            else:
                await asyncio.sleep(min(0.01, left))  # a cut stream's task is about to spawn its settlement

    async def close(self) -> None:
        await self.drain()  # streams cut by the shutdown are metered before the ledger's last write
        await self.ledger.close()  # before the session and stores it writes through
        await self.budgets.close()
        await self.prompt_log.close()  # the records of the streams just settled included
        await self.authenticator.close()
        await asyncio.to_thread(self.telemetry.shutdown)  # the last export blocks on HTTP
        if self.cache is not None:
            await self.cache.close()
        await self.capacity.close()
        await self.stores.close()  # after everything that writes through them, before their HTTP session
        if self._session is not None:
            await self._session.close()
        if self._content_safety_credential is not None:
            await self._content_safety_credential.close()
        for credential in set(self.credentials.values()):
            close = getattr(credential, "close", None)
            if close is not None:
                await close()


_gateways: dict[asyncio.AbstractEventLoop, Gateway] = {}
_locks: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}  # an asyncio.Lock belongs to one loop


# Python's cyclic collector by default runs a young collection every 700 allocations and a full one as the
# heap grows; a full one walks every live object, and a worker holding a thousand streams has a few hundred
# thousand of them. Measured in a burst of 1,000 streams: 0.2 to 0.3 ms of CPU per stream in the collector,
# mostly three full collections, against under 0.1 ms with the objects built at start frozen and a young
# collection every 10,000 allocations. Young cycles are still collected within milliseconds.
GC_THRESHOLDS = (10_000, 20, 100)
_gc_tuned = False


def _tune_gc() -> None:
    """Once per process, after the first gateway is built: freeze what start-up made, collect less often."""
    global _gc_tuned  # noqa: PLW0603 - a process-wide setting, applied once
    if _gc_tuned:
        return
    _gc_tuned = True
    gc.collect()  # nothing that is already garbage gets frozen
    gc.freeze()  # modules, settings, the tokenizer: never garbage, never scanned again
    gc.set_threshold(*GC_THRESHOLDS)


async def get_gateway() -> Gateway:
    """This worker's gateway, built on first use in the running loop."""
    loop = asyncio.get_running_loop()
    gateway = _gateways.get(loop)
    if gateway is not None:
        return gateway
    async with _locks.setdefault(loop, asyncio.Lock()):
        gateway = _gateways.get(loop)
        if gateway is None:
            gateway = Gateway(get_settings())
            await gateway.start()
            _gateways[loop] = gateway
            _tune_gc()
            log.info(
                "gateway ready: %d backends, deployments %s, stores %s, instance %s",
                len(gateway.settings.backends),
                sorted(gateway.settings.deployments),
                gateway.stores.kind,
                gateway.instance_id,
            )
    return gateway


def install(gateway: Gateway) -> None:
    """Use this gateway for the running loop (tests and benchmarks that build one with an injected clock)."""
    _gateways[asyncio.get_running_loop()] = gateway


async def close_gateways() -> None:
    """Close the running loop's gateway (each loop closes its own: a gateway's sessions belong to its loop)."""
    loop = asyncio.get_running_loop()
    _locks.pop(loop, None)
    gateway = _gateways.pop(loop, None)
    if gateway is not None:
        await gateway.close()
