"""The simulator's configuration: one frozen value built once (from the CLI or by a test), read everywhere.

Runtime changes (faults, latency) never mutate it; they live in the running
simulator's state and start from the values here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from simulator.faults import Faults

DEFAULT_DEPLOYMENTS = ("gpt-4o-mini", "text-embedding-3-small")


@dataclass(frozen=True, slots=True)
class Limits:
    """Azure-style quota of one deployment, over a sliding 60 s window. None means unlimited."""

    tpm: int | None = None
    rpm: int | None = None

    def __post_init__(self) -> None:
        for name in ("tpm", "rpm"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1 (or None for unlimited), not {value}")


@dataclass(frozen=True, slots=True)
class Latency:
    """How long a simulated model takes: time to first token, then tokens per second (0 = instant)."""

    ttft_ms: float = 0.0
    tokens_per_second: float = 0.0

    def __post_init__(self) -> None:
        if self.ttft_ms < 0 or self.tokens_per_second < 0:
            raise ValueError("latency values cannot be negative")

    def seconds_for(self, tokens: int) -> float:
        """Time a non-streamed completion of `tokens` tokens takes, first token included."""
        per_token = tokens / self.tokens_per_second if self.tokens_per_second else 0.0
        return self.ttft_ms / 1000 + per_token

    @property
    def instant(self) -> bool:
        return self.ttft_ms == 0 and self.tokens_per_second == 0


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """Everything a simulator instance is started with.

    `limits` applies to every deployment; `deployment_limits` overrides it per
    deployment. Every deployment answers both chat completions and embeddings:
    the simulator does not model which model sits behind a name.
    """

    name: str = "sim"
    host: str = "127.0.0.1"
    port: int = 0
    region: str = "eastus"
    deployments: tuple[str, ...] = DEFAULT_DEPLOYMENTS
    limits: Limits = Limits()
    deployment_limits: Mapping[str, Limits] = field(default_factory=dict)
    api_key: str | None = None
    latency: Latency = Latency()
    faults: Faults = field(default_factory=Faults)
    default_max_tokens: int = 16
    embedding_dimensions: int = 384
    request_log_size: int = 200
    # A hung request is let go after this long so a forgotten fault cannot hold tasks forever.
    hang_limit_seconds: float = 300.0
    # Streams open with Azure's prompt_filter_results chunk and carry content_filter_results per chunk. Off by
    # default: that first chunk has no choices, which clients written against OpenAI alone trip over.
    stream_filter_results: bool = False
    # Stored responses, files and batches kept per instance (the oldest go first), and uploads' largest size.
    store_size: int = 1000
    max_upload_bytes: int = 32 * 1024 * 1024
    # A background response is queued, then in progress, then done after this long (injected clock).
    background_seconds: float = 0.4
    # A batch is validating, then in progress, then finalizing, then completed, one step of this each.
    batch_step_seconds: float = 0.2

    def __post_init__(self) -> None:
        if not self.deployments:
            raise ValueError("at least one deployment is needed")
        unknown = set(self.deployment_limits) - set(self.deployments)
        if unknown:
            raise ValueError(f"limits given for unknown deployments: {', '.join(sorted(unknown))}")
        if self.default_max_tokens < 1 or self.embedding_dimensions < 1 or self.request_log_size < 1:
            raise ValueError("default_max_tokens, embedding_dimensions and request_log_size must be positive")
        if self.store_size < 1 or self.max_upload_bytes < 1:
            raise ValueError("store_size and max_upload_bytes must be positive")
        if self.background_seconds < 0 or self.batch_step_seconds < 0:
            raise ValueError("background_seconds and batch_step_seconds cannot be negative")

    def limits_for(self, deployment: str) -> Limits:
        return self.deployment_limits.get(deployment, self.limits)
