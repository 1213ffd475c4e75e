"""Backend affinity: a stored response, file or batch lives in one Azure OpenAI resource, so calls naming it go there.

When a backend answers a create (a response with `store` on, a file upload,
a batch), the gateway pins the new id to that backend in the shared
`AffinityStore`, with the caller's subscription and an expiry
(GATEWAY_AFFINITY_DAYS, 30 by default: Azure keeps stored responses 30
days). A call that names a pinned id (`previous_response_id`, a batch's
`input_file_id`, the id in `GET/DELETE /responses/{id}`, `input_items`,
`cancel`, `/files/{id}`, `/batches/{id}`) is sent to that backend only: if
it is down (breaker open, throttled, connection failed, 5xx) the caller gets
503 `affinity_backend_unavailable` with Retry-After, never another
backend's 404. An id pinned by another subscription answers 404, as if it
did not exist. An id with no record (made before the gateway, its record
expired, or lost while storage was down) is looked for on every backend in
turn: the first that does not answer 404 answers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.clock import Clock
from shared.errors import BadRequest, NotFound, StoreUnavailable
from shared.models import Caller, Operation
from shared.routing import ACCOUNT
from shared.stores.protocols import AffinityStore, Pin
from shared.surface import Kind, Route

if TYPE_CHECKING:
    from shared.api import ApiCall
    from shared.routing import Router

log = logging.getLogger("gateway.affinity")

DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class Lookup:
    """Where a call naming `object_id` must go: `pin` when known, else anywhere (seek on every backend)."""

    object_id: str
    pin: Pin | None


class Affinity:
    def __init__(self, store: AffinityStore, clock: Clock, *, ttl_seconds: float) -> None:
        self._store = store
        self._clock = clock
        self._ttl = ttl_seconds

    async def find(self, caller: Caller, object_id: str, what: str) -> Lookup:
        """The pin of an id the caller names; 404 if another subscription's. Storage down: seek, as if unknown."""
        try:
            pin = await self._store.find(object_id, self._clock.now())
        except StoreUnavailable as exc:
            log.warning("affinity record of %s unreadable (%s); looking on every backend", object_id[:80], exc)
            return Lookup(object_id, None)
        if pin is not None and pin.subscription_id != caller.subscription_id:
            raise NotFound(f"No {what} with id '{object_id[:80]}' found.", code="not_found")
        return Lookup(object_id, pin)

    async def pin(self, caller: Caller, object_id: str, backend: str, deployment: str) -> None:
        """Remember where a new object lives; a failed write is logged (later calls then seek it)."""
        pin = Pin(backend, caller.subscription_id, deployment, self._clock.now() + self._ttl)
        try:
            await self._store.pin(object_id, pin)
        except StoreUnavailable as exc:
            log.warning("affinity of %s to %s not recorded (%s); calls naming it will seek it", object_id, backend, exc)

    async def mine(self, caller: Caller, object_ids: Iterable[str]) -> set[str]:
        """Which of these ids the caller's subscription created through the gateway (lists show only those)."""
        ids = list(dict.fromkeys(object_ids))
        now = self._clock.now()
        try:
            pins = await asyncio.gather(*(self._store.find(i, now) for i in ids))
        except StoreUnavailable as exc:
            log.warning("affinity records unreadable (%s); listing nothing", exc)
            return set()
        return {i for i, pin in zip(ids, pins, strict=True) if pin and pin.subscription_id == caller.subscription_id}

    async def claim(self, caller: Caller, marker: str, backend: str) -> bool:
        """True for exactly one instance (across all of them) that claims `marker`; False if storage is down."""
        pin = Pin(backend, caller.subscription_id, "", self._clock.now() + self._ttl)
        try:
            return await self._store.claim(marker, pin)
        except StoreUnavailable as exc:
            log.warning("could not claim %s (%s); left for a later read", marker, exc)
            return False

    async def known(self, object_id: str) -> bool:
        try:
            return await self._store.find(object_id, self._clock.now()) is not None
        except StoreUnavailable:
            return True  # do not write blind while storage is down; the next read tries again

    async def forget(self, object_id: str) -> None:
        try:
            await self._store.forget(object_id)
        except StoreUnavailable as exc:
            log.warning("affinity of deleted %s not removed (%s); it expires on its own", object_id, exc)


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a call goes: the routing scope (a deployment, or `routing.ACCOUNT`), and one backend or a search."""

    deployment: str
    pinned: str | None = None
    seek: bool = False
    pin: Pin | None = None


_WHAT = {Kind.RESPONSE: "response", Kind.FILE: "file", Kind.BATCH: "batch"}


async def place(affinity: Affinity, router: Router, caller: Caller, route: Route, call: ApiCall) -> Placement:
    """The placement of a call: pinned to where the object it names lives, else the usual choice."""
    spec = route.spec
    scope = call.deployment or ACCOUNT
    named: tuple[str, Kind] | None = None
    if spec.target is not None and route.object_id:
        named = (route.object_id, spec.target)
    elif spec.operation is Operation.RESPONSES_CREATE and isinstance(call.body.get("previous_response_id"), str):
        named = (call.body["previous_response_id"], Kind.RESPONSE)
    elif spec.operation is Operation.BATCHES_CREATE and isinstance(call.body.get("input_file_id"), str):
        named = (call.body["input_file_id"], Kind.FILE)
    if named is None:
        return Placement(scope)
    found = await affinity.find(caller, named[0], _WHAT[named[1]])
    pin = found.pin
    if pin is None:
        return Placement(scope, seek=True)
    if spec.target is not None:
        scope = pin.deployment or ACCOUNT  # the breaker of the deployment that made it
    elif not router.serves(pin.backend, scope):
        raise BadRequest(
            f"The {_WHAT[named[1]]} '{named[0][:80]}' is stored on backend '{pin.backend}', "
            f"which does not serve deployment '{call.deployment}'.",
            code="affinity_deployment_mismatch",
        )
    return Placement(scope, pinned=pin.backend, pin=pin)


def created_id(route: Route, call: ApiCall, answer: Mapping[str, Any] | None) -> str | None:
    """The id of an object a successful unary answer created (a stored response, a file, a batch)."""
    if route.spec.creates is None or answer is None or call.body.get("store") is False:
        return None
    object_id = answer.get("id")
    return object_id if isinstance(object_id, str) and object_id else None


def produced_files(answer: Mapping[str, Any] | None) -> list[str]:
    """The output and error files a batch answer names: they live on the batch's backend."""
    if answer is None or answer.get("object") != "batch":
        return []
    return [v for k in ("output_file_id", "error_file_id") if isinstance(v := answer.get(k), str) and v]
