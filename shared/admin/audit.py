"""The admin audit trail: every subscription change (who, what, when) written to the audit store, and read back.

An entry names the actor (the shared admin key, an Entra principal's oid,
app and name, or the CLI's operator), the action and route, the subscription
and the names of the fields it changed: never a key or a value. An entry is
written after the change succeeds; if the store cannot take it, the change
stands and the entry goes to the error log whole, so it is not lost silently.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared.errors import StoreUnavailable
from shared.stores.protocols import AuditEntry, AuditStore

if TYPE_CHECKING:
    from collections.abc import Iterable

    from shared.admin.access import Actor
    from shared.clock import Clock

log = logging.getLogger("gateway.audit")

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


class AuditTrail:
    def __init__(self, store: AuditStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def record(
        self, actor: Actor, action: str, route: str, subscription_id: str, fields: Iterable[str] = ()
    ) -> AuditEntry:
        entry = AuditEntry(
            at=self._clock.now(),
            actor=actor.id,
            action=action,
            route=route,
            subscription_id=subscription_id,
            fields=tuple(sorted(fields)),
            actor_name=actor.name,
            app_id=actor.app_id,
        )
        log.info("admin %s %s by %s fields=%s", action, subscription_id, actor.id, ",".join(entry.fields))
        try:
            await self._store.append(entry)
        except StoreUnavailable as exc:
            log.error("audit entry not stored (%s): %s", exc, json.dumps(view(entry)))
        return entry

    async def recent(self, limit: int = DEFAULT_LIMIT, subscription_id: str | None = None) -> list[dict[str, Any]]:
        return [view(e) for e in await self._store.recent(max(1, min(limit, MAX_LIMIT)), subscription_id)]


def view(entry: AuditEntry) -> dict[str, Any]:
    return {
        "at": datetime.fromtimestamp(entry.at, UTC).isoformat(),
        "actor": entry.actor,
        "actor_name": entry.actor_name,
        "app_id": entry.app_id,
        "action": entry.action,
        "route": entry.route,
        "subscription_id": entry.subscription_id,
        "fields": list(entry.fields),
    }
