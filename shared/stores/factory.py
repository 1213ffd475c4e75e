"""The one place that picks store implementations from configuration.

Table Storage when a storage endpoint is configured (a connection string
locally, `GATEWAY_STORAGE__tableServiceUri` with managed identity in Azure);
embedded otherwise. Embedded state is per process, so in Azure (many
instances) it is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from shared.clock import Clock
from shared.config import Settings
from shared.errors import ConfigError
from shared.stores.embedded import EmbeddedBreakerStore, EmbeddedCounterStore, EmbeddedSubscriptionStore
from shared.stores.protocols import BreakerStore, CounterStore, ProbeStore, SubscriptionStore


class BackendStateStore(BreakerStore, ProbeStore, Protocol):
    """Breakers and probe results live side by side."""


@dataclass(frozen=True, slots=True)
class Stores:
    subscriptions: SubscriptionStore
    backends: BackendStateStore
    counters: CounterStore
    kind: str  # "embedded" | "tables"


def build_stores(settings: Settings, clock: Clock) -> Stores:
    if settings.storage is None:
        if settings.running_in_azure:
            raise ConfigError(
                [
                    "No storage configured while running in Azure: embedded stores keep state per instance, "
                    "so limits and breakers would not be shared. Set GATEWAY_STORAGE__tableServiceUri "
                    "(with GATEWAY_STORAGE__credential=managedidentity) or GATEWAY_STORAGE."
                ]
            )
        return Stores(EmbeddedSubscriptionStore(), EmbeddedBreakerStore(), EmbeddedCounterStore(clock), "embedded")
    raise ConfigError(["Table Storage stores are not available in this build"])
