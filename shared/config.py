"""Configuration parsed once, lazily, from app settings into typed values; every problem is reported together.

The settings themselves are listed in `shared.catalog`. Nothing here reads the
environment at import time: `load_settings(env)` takes a mapping, and
`get_settings()` parses `os.environ` on first use and caches the result.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from urllib.parse import urlsplit

from shared.backendconfig import BackendConfig, BreakerPolicy, parse_backends, parse_breaker
from shared.cache.config import CacheConfig, parse_cache_config
from shared.capacity import CapacityPolicy
from shared.contentsafety.config import ContentSafetyConfig, parse_content_safety_config
from shared.entra.config import EntraConfig, parse_entra_config
from shared.errors import ConfigError
from shared.logs import wants_json
from shared.promptlog.config import PromptLogConfig, parse_prompt_log_config
from shared.settingsreader import SettingsReader

# Per operation (GATEWAY_BODY_LIMITS): a chat or embeddings body beyond 1 MiB is almost always a mistake, and
# Azure OpenAI's own limits are lower than the gateway's read ceiling; uploads will get larger ones.
DEFAULT_BODY_LIMITS: Mapping[str, int] = MappingProxyType({"chat/completions": 1 << 20, "embeddings": 1 << 20})


TOKEN_TYPES = ("input", "cached_input", "output")


@dataclass(frozen=True, slots=True)
class TokenPrices(Mapping[str, float]):
    """One deployment's prices per 1,000 tokens, by token type.

    `cached_input` prices prompt tokens the backend served from its prompt
    cache; unset, they cost `input` (and the mapping has no such key). Also a
    read-only mapping of token type to price, the shape the ledger's `price` reads.
    """

    input: float = 0.0
    output: float = 0.0
    cached_input: float | None = None

    def __getitem__(self, token_type: str) -> float:
        value = getattr(self, token_type, None) if token_type in TOKEN_TYPES else None
        if value is None:  # an unknown type, or no cached rate (those tokens then cost `input`)
            raise KeyError(token_type)
        return float(value)

    def __iter__(self) -> Iterator[str]:
        return iter(t for t in TOKEN_TYPES if getattr(self, t) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)


@dataclass(frozen=True, slots=True)
class StorageConfig:
    connection_string: str | None = None
    table_service_uri: str | None = None
    client_id: str | None = None


@dataclass(frozen=True, slots=True)
class Settings:
    backends: tuple[BackendConfig, ...]
    admin_key: str | None = None
    admin_key_enabled: bool = True  # false: only Entra tokens with the admin (or reader) role reach the admin API
    entra: EntraConfig | None = None
    max_body_bytes: int = 4 * 1024 * 1024
    body_limits: Mapping[str, int] = field(default_factory=lambda: MappingProxyType(dict(DEFAULT_BODY_LIMITS)))
    max_attempts: int = 3
    default_throttle_seconds: float = 10.0
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    capacity: CapacityPolicy = field(default_factory=CapacityPolicy)
    storage: StorageConfig | None = None
    table_prefix: str = "gw"
    key_cache_seconds: float = 10.0
    key_stale_seconds: float = 300.0
    storage_timeout_seconds: float = 2.0
    default_completion_tokens: int = 1024
    limits_fail_closed: bool = False
    rate_window_seconds: int = 60
    breaker_sync_seconds: float = 2.0
    probe_schedule: str = "*/30 * * * * *"
    cache: CacheConfig | None = None
    cosmos_endpoint: str | None = None
    cosmos_key: str | None = None
    cosmos_client_id: str | None = None
    cosmos_database: str = "gateway"
    cosmos_container: str = "semcache"
    prices: Mapping[str, TokenPrices] = field(default_factory=lambda: MappingProxyType({}))
    ledger_flush_seconds: float = 10.0
    affinity_days: float = 30.0
    budget_sync_seconds: float = 5.0
    budget_webhook_url: str | None = None
    budget_webhook_secret: str | None = None
    log_prompts: bool = False
    log_json: bool = False
    metrics_endpoint: bool = False
    traces_per_second: float = 1.0
    appinsights_connection_string: str | None = None
    appinsights_authentication: str | None = None
    managed_identity_client_id: str | None = None
    service_name: str = "aoai-gateway"
    demo_key: str | None = None
    running_in_azure: bool = False
    prompt_log: PromptLogConfig = field(default_factory=PromptLogConfig)
    blob_service_uri: str | None = None  # the audit log's blob service in Azure (managed identity)
    content_safety: ContentSafetyConfig | None = None

    def body_limit(self, operation: str) -> int:
        """The largest body this operation accepts (never more than what the HTTP layer reads)."""
        return min(self.body_limits.get(operation, self.max_body_bytes), self.max_body_bytes)

    @property
    def deployments(self) -> frozenset[str]:
        return frozenset(d for b in self.backends for d in b.deployments)


def _parse_storage(r: SettingsReader) -> StorageConfig | None:
    conn = r.raw("GATEWAY_STORAGE")
    uri = r.raw("GATEWAY_STORAGE__tableServiceUri")
    if conn is None and uri is None:
        return None
    if uri is not None and not uri.startswith("https://"):
        r.problems.append("GATEWAY_STORAGE__tableServiceUri: must be an https:// URL")
    return StorageConfig(connection_string=conn, table_service_uri=uri, client_id=r.raw("GATEWAY_STORAGE__clientId"))


def _rate_window(r: SettingsReader) -> int:
    seconds = int(r.number("GATEWAY_RATE_WINDOW_SECONDS", minimum=1, integer=True))
    if seconds < 1 or 60 % seconds:
        r.problems.append(
            f"GATEWAY_RATE_WINDOW_SECONDS: must divide 60 (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60), got {seconds}"
        )
        return 60
    return seconds


def _parse_cache(r: SettingsReader, deployments: frozenset[str]) -> CacheConfig | None:
    raw = r.json("GATEWAY_CACHE")
    return None if raw is None else parse_cache_config(raw, deployments, r.problems)


def _parse_prices(r: SettingsReader) -> Mapping[str, TokenPrices]:
    raw = r.json("GATEWAY_PRICES") or {}
    shape = 'GATEWAY_PRICES: {"<deployment>": {"input": <per 1k>, "output": <per 1k>}}'
    if not isinstance(raw, dict):
        r.problems.append(shape)
        return MappingProxyType({})
    prices: dict[str, TokenPrices] = {}
    for deployment, table in raw.items():
        if not isinstance(table, dict) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in table.values()
        ):
            if shape not in r.problems:
                r.problems.append(shape)
            continue
        for token_type in sorted(set(table) - set(TOKEN_TYPES)):
            r.problems.append(
                f"GATEWAY_PRICES[{deployment}]: unknown token type {token_type!r} (input, cached_input or output)"
            )
        prices[deployment] = TokenPrices(**{t: float(table[t]) for t in TOKEN_TYPES if t in table})
    return MappingProxyType(prices)


def _log_json(r: SettingsReader, env: Mapping[str, str]) -> bool:
    choice = (r.raw("GATEWAY_LOG_FORMAT") or "auto").lower()
    if choice not in ("auto", "json", "text"):
        r.problems.append("GATEWAY_LOG_FORMAT: json, text or auto")
    return wants_json(choice, running_in_azure=bool(env.get("WEBSITE_INSTANCE_ID") or env.get("WEBSITE_SITE_NAME")))


def _parse_body_limits(r: SettingsReader) -> Mapping[str, int]:
    raw = r.json("GATEWAY_BODY_LIMITS")
    limits = dict(DEFAULT_BODY_LIMITS)
    if raw is None:
        return MappingProxyType(limits)
    if not isinstance(raw, dict):
        r.problems.append('GATEWAY_BODY_LIMITS: a JSON object such as {"chat/completions": 1048576}')
        return MappingProxyType(limits)
    for operation, value in raw.items():
        if operation not in DEFAULT_BODY_LIMITS:
            known = ", ".join(DEFAULT_BODY_LIMITS)
            r.problems.append(f"GATEWAY_BODY_LIMITS: unknown operation {operation!r} ({known})")
        elif isinstance(value, bool) or not isinstance(value, int) or value < 1024:
            r.problems.append(f"GATEWAY_BODY_LIMITS[{operation}]: a whole number of bytes, at least 1024")
        else:
            limits[operation] = value
    return MappingProxyType(limits)


def _webhook_url(r: SettingsReader) -> str | None:
    url = r.raw("GATEWAY_BUDGET_WEBHOOK_URL") or None
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        r.problems.append(f"GATEWAY_BUDGET_WEBHOOK_URL: an http(s) URL, got {url!r}")
    if not r.raw("GATEWAY_BUDGET_WEBHOOK_SECRET"):
        r.problems.append("GATEWAY_BUDGET_WEBHOOK_SECRET: required with GATEWAY_BUDGET_WEBHOOK_URL (bodies are signed)")
    return url


def load_settings(env: Mapping[str, str]) -> Settings:
    """Parse app settings; raise `ConfigError` listing every problem."""
    r = SettingsReader(env)
    backends = parse_backends(r)
    deployments = frozenset(d for b in backends for d in b.deployments)
    settings = Settings(
        backends=backends,
        admin_key=r.raw("GATEWAY_ADMIN_KEY"),
        admin_key_enabled=r.flag("GATEWAY_ADMIN_KEY_ENABLED"),
        entra=parse_entra_config(r.raw, r.problems),
        max_body_bytes=int(r.number("GATEWAY_MAX_BODY_BYTES", minimum=1024, integer=True)),
        body_limits=_parse_body_limits(r),
        max_attempts=int(r.number("GATEWAY_MAX_ATTEMPTS", minimum=1, integer=True)),
        default_throttle_seconds=r.number("GATEWAY_DEFAULT_THROTTLE_SECONDS", minimum=0.1),
        breaker=parse_breaker(r),
        capacity=CapacityPolicy(
            stream_slots=int(r.number("GATEWAY_MAX_CONNECTIONS_PER_BACKEND", minimum=1, integer=True)),
            unary_slots=int(r.number("GATEWAY_UNARY_CONNECTIONS_PER_BACKEND", minimum=1, integer=True)),
            wait_seconds=r.number("GATEWAY_POOL_WAIT_SECONDS", minimum=0),
        ),
        storage=_parse_storage(r),
        table_prefix=r.raw("GATEWAY_TABLE_PREFIX") or "gw",
        key_cache_seconds=r.number("GATEWAY_KEY_CACHE_SECONDS", minimum=0),
        key_stale_seconds=r.number("GATEWAY_KEY_STALE_SECONDS", minimum=0),
        storage_timeout_seconds=r.number("GATEWAY_STORAGE_TIMEOUT_SECONDS", minimum=0.1),
        default_completion_tokens=int(r.number("GATEWAY_DEFAULT_COMPLETION_TOKENS", minimum=1, integer=True)),
        limits_fail_closed=r.flag("GATEWAY_LIMITS_FAIL_CLOSED"),
        rate_window_seconds=_rate_window(r),
        breaker_sync_seconds=r.number("GATEWAY_BREAKER_SYNC_SECONDS", minimum=0.1),
        probe_schedule=r.raw("GATEWAY_PROBE_SCHEDULE") or "*/30 * * * * *",
        cache=_parse_cache(r, deployments),
        cosmos_endpoint=r.raw("GATEWAY_COSMOS__accountEndpoint"),
        cosmos_key=r.raw("GATEWAY_COSMOS_KEY"),
        cosmos_client_id=r.raw("GATEWAY_COSMOS__clientId"),
        cosmos_database=r.raw("GATEWAY_COSMOS_DATABASE") or "gateway",
        cosmos_container=r.raw("GATEWAY_COSMOS_CONTAINER") or "semcache",
        prices=_parse_prices(r),
        ledger_flush_seconds=r.number("GATEWAY_LEDGER_FLUSH_SECONDS", minimum=0.1),
        affinity_days=r.number("GATEWAY_AFFINITY_DAYS", minimum=0.01),
        budget_sync_seconds=r.number("GATEWAY_BUDGET_SYNC_SECONDS", minimum=0.1),
        budget_webhook_url=_webhook_url(r),
        budget_webhook_secret=r.raw("GATEWAY_BUDGET_WEBHOOK_SECRET") or None,
        log_prompts=r.flag("GATEWAY_LOG_PROMPTS"),
        log_json=_log_json(r, env),
        metrics_endpoint=r.flag("GATEWAY_METRICS_ENDPOINT"),
        traces_per_second=r.number("GATEWAY_TRACES_PER_SECOND", minimum=0),
        appinsights_connection_string=r.raw("APPLICATIONINSIGHTS_CONNECTION_STRING"),
        appinsights_authentication=r.raw("APPLICATIONINSIGHTS_AUTHENTICATION_STRING"),
        managed_identity_client_id=r.raw("AZURE_CLIENT_ID"),
        # Azure names the cloud role after the app; locally every instance is "aoai-gateway".
        service_name=(env.get("WEBSITE_SITE_NAME") or "").strip() or "aoai-gateway",
        demo_key=r.raw("GATEWAY_DEMO_KEY"),
        # Azure App Service / Functions sets these on every instance it runs.
        running_in_azure=bool(env.get("WEBSITE_INSTANCE_ID") or env.get("WEBSITE_SITE_NAME")),
    )
    blob_uri = r.raw("GATEWAY_STORAGE__blobServiceUri")
    if blob_uri is not None and not blob_uri.startswith("https://"):
        r.problems.append("GATEWAY_STORAGE__blobServiceUri: must be an https:// URL")
    settings = replace(
        settings,
        prompt_log=parse_prompt_log_config(r.json("GATEWAY_PROMPT_LOG"), r.problems),
        blob_service_uri=blob_uri,
        content_safety=parse_content_safety_config(r.json("GATEWAY_CONTENT_SAFETY"), env, deployments, r.problems),
    )
    if r.problems:
        raise ConfigError(r.problems)
    return settings


_settings: Settings | None = None


def get_settings() -> Settings:
    global _settings  # noqa: PLW0603 - parsed once per worker, lazily, on first use
    if _settings is None:
        _settings = load_settings(os.environ)
    return _settings


def reset_settings() -> None:
    """Forget the parsed settings (tests, and the local host after it loads local.settings.json)."""
    global _settings  # noqa: PLW0603
    _settings = None
