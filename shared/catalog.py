"""Every app setting the gateway reads, with its default and meaning.

This is the single list the README, `local.settings.sample.json` and the
Bicep are checked against (tests/test_infra.py), so a setting is added here
first and read through `shared.config` only.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    default: str | None  # None: no default (optional, or required where noted)
    doc: str
    scope: str = "app"  # "app": set in Azure; "local": only for local runs; "dynamic": name chosen by the operator


CATALOG: tuple[Setting, ...] = (
    Setting("GATEWAY_BACKENDS", None, "JSON list of Azure OpenAI backends (required). Schema in the README."),
    Setting(
        "GATEWAY_ADMIN_KEY",
        None,
        "Key for the admin API (header x-admin-key). Admin routes are off when unset.",
    ),
    Setting(
        "GATEWAY_ADMIN_KEY_ENABLED",
        "true",
        "false: the admin key is refused; only Entra tokens with the admin or reader app role reach the admin API.",
    ),
    Setting(
        "GATEWAY_ENTRA_TENANT_ID",
        None,
        "Entra directory (tenant) id. Set: callers may present Entra ID tokens, and admins app-role tokens.",
    ),
    Setting(
        "GATEWAY_ENTRA_AUDIENCE",
        None,
        "The gateway's app ID URI (api://...) and/or client id, comma-separated: a token's aud must be one.",
    ),
    Setting(
        "GATEWAY_ENTRA_JWKS_URL",
        None,
        "Signing keys URL. Default https://login.microsoftonline.com/<tenant>/discovery/v2.0/keys.",
    ),
    Setting(
        "GATEWAY_ENTRA_ISSUER",
        None,
        "Accepted issuers, comma-separated (sovereign clouds). Default: the tenant's v1 and v2 issuers.",
    ),
    Setting(
        "GATEWAY_ENTRA_REQUIRED_ROLES",
        None,
        "App roles or scopes a caller's token needs one of, comma-separated. Unset: none required.",
    ),
    Setting("GATEWAY_ENTRA_ADMIN_ROLE", "Gateway.Admin", "App role that may use the whole admin API."),
    Setting("GATEWAY_ENTRA_READER_ROLE", "Gateway.Reader", "App role that may use the admin API's GET views."),
    Setting("GATEWAY_MAX_BODY_BYTES", "4194304", "Largest request body accepted; larger answers 413."),
    Setting(
        "GATEWAY_BODY_LIMITS",
        "{}",
        'JSON per-operation body limits in bytes, over the defaults {"chat/completions": 1048576, "embeddings": '
        "1048576}; each at most GATEWAY_MAX_BODY_BYTES. Larger answers 413 before anything is forwarded.",
    ),
    Setting("GATEWAY_MAX_ATTEMPTS", "3", "Backend attempts per request, failovers included."),
    Setting(
        "GATEWAY_DEFAULT_THROTTLE_SECONDS",
        "10",
        "How long a backend deployment is skipped after a 429 without a reset header.",
    ),
    Setting(
        "GATEWAY_BREAKER",
        "{}",
        "JSON circuit-breaker policy: mode (rate | count), failure_rate, min_requests, window_seconds (rate); "
        "failures, interval_seconds (count); trip_seconds, status_ranges, count_429, accept_retry_after, "
        "trial_timeout_seconds.",
    ),
    Setting(
        "GATEWAY_STORAGE",
        None,
        "Table Storage connection string (local, e.g. Azurite). Unset with no service URI: embedded stores.",
    ),
    Setting("GATEWAY_STORAGE__tableServiceUri", None, "Table service URI for identity-based access in Azure."),
    Setting("GATEWAY_STORAGE__credential", None, "`managedidentity` in Azure."),
    Setting("GATEWAY_STORAGE__clientId", None, "Client id of the user-assigned identity for Table Storage."),
    Setting("GATEWAY_TABLE_PREFIX", "gw", "Prefix of the gateway's table names."),
    Setting("GATEWAY_KEY_CACHE_SECONDS", "10", "How long a subscription lookup is cached per instance."),
    Setting(
        "GATEWAY_KEY_STALE_SECONDS",
        "300",
        "How long past GATEWAY_KEY_CACHE_SECONDS a cached key lookup is still served while it is refreshed in the "
        "background, so slow storage never delays a request for a known key.",
    ),
    Setting(
        "GATEWAY_STORAGE_TIMEOUT_SECONDS",
        "2",
        "Longest wait for one Table Storage call (retries included); then the call counts as storage unavailable.",
    ),
    Setting(
        "GATEWAY_DEFAULT_COMPLETION_TOKENS",
        "1024",
        "Completion tokens reserved when a request sets no max_tokens.",
    ),
    Setting(
        "GATEWAY_LIMITS_FAIL_CLOSED",
        "false",
        "Refuse requests (503) instead of enforcing per instance when storage is down.",
    ),
    Setting(
        "GATEWAY_RATE_WINDOW_SECONDS",
        "60",
        "Window of the TPM/RPM limits in seconds, a divisor of 60; limits scale to it (10: TPM/6 per 10 s).",
    ),
    Setting(
        "GATEWAY_MAX_CONNECTIONS_PER_BACKEND",
        "1000",
        "Streamed calls one instance keeps open to each backend at once; more wait (GATEWAY_POOL_WAIT_SECONDS).",
    ),
    Setting(
        "GATEWAY_UNARY_CONNECTIONS_PER_BACKEND",
        "200",
        "Non-streamed calls one instance sends each backend at once, apart from the streams' slots.",
    ),
    Setting(
        "GATEWAY_POOL_WAIT_SECONDS",
        "2",
        "How long a call waits for a free backend slot before the gateway sheds it (503 gateway_overloaded).",
    ),
    Setting("GATEWAY_BREAKER_SYNC_SECONDS", "2", "How often an instance refreshes shared breaker state."),
    Setting("GATEWAY_PROBE_SCHEDULE", "*/30 * * * * *", "NCRONTAB schedule of the backend health probe timer."),
    Setting(
        "GATEWAY_CACHE",
        None,
        "JSON semantic-cache configuration. Cache off when unset. Schema in the README.",
    ),
    Setting(
        "GATEWAY_COSMOS__accountEndpoint",
        None,
        "Cosmos DB endpoint for the semantic cache. Unset: embedded vector store.",
    ),
    Setting("GATEWAY_COSMOS__credential", None, "`managedidentity` in Azure."),
    Setting("GATEWAY_COSMOS__clientId", None, "Client id of the user-assigned identity for Cosmos DB."),
    Setting(
        "GATEWAY_COSMOS_KEY",
        None,
        "Cosmos DB key, local emulators only; Azure uses the identity.",
        scope="local",
    ),
    Setting("GATEWAY_COSMOS_DATABASE", "gateway", "Cosmos DB database of the cache."),
    Setting("GATEWAY_COSMOS_CONTAINER", "semcache", "Cosmos DB container of the cache."),
    Setting(
        "GATEWAY_PRICES",
        "{}",
        "JSON price table: deployment -> {input, output, cached_input (optional)} per 1,000 tokens.",
    ),
    Setting("GATEWAY_LEDGER_FLUSH_SECONDS", "10", "How often usage ledger rows are written."),
    Setting(
        "GATEWAY_AFFINITY_DAYS",
        "30",
        "How long the backend of a stored response, file or batch is remembered (calls naming it go there).",
    ),
    Setting(
        "GATEWAY_LOG_FORMAT",
        "auto",
        "`json` (one JSON object per log line), `text`, or `auto`: JSON in Azure, text locally.",
    ),
    Setting(
        "GATEWAY_BUDGET_SYNC_SECONDS",
        "5",
        "How often an instance adds its spend to a subscription's shared budget record (and reads everyone's).",
    ),
    Setting(
        "GATEWAY_BUDGET_WEBHOOK_URL",
        "",
        "Budget alerts are also POSTed here (JSON, signed with HMAC-SHA256, retried). Empty: log and metric only.",
    ),
    Setting(
        "GATEWAY_BUDGET_WEBHOOK_SECRET",
        "",
        "Key of the budget webhook's HMAC-SHA256 signature (x-gateway-signature); required with the URL.",
    ),
    Setting("GATEWAY_LOG_PROMPTS", "false", "Log prompt text (off: prompts never reach logs)."),
    Setting(
        "GATEWAY_PROMPT_LOG",
        "{}",
        "JSON settings of the audit log of prompts and completions (container, queue_size, batch_records, "
        "flush_seconds, max_record_bytes, redact, lookup_hours). Which requests are logged is per subscription.",
    ),
    Setting(
        "GATEWAY_CONTENT_SAFETY",
        None,
        "JSON Content Safety stage (endpoint, auth, prompt_shields, categories, deployments, subscriptions, "
        "on_unavailable, timeout_seconds, max_chunks). Off when unset. Schema in the README.",
    ),
    Setting(
        "GATEWAY_STORAGE__blobServiceUri",
        None,
        "Blob service URI of the audit log in Azure (managed identity); locally GATEWAY_STORAGE's blob endpoint.",
    ),
    Setting(
        "GATEWAY_METRICS_ENDPOINT",
        "false",
        "Collect metrics in process and serve them as Prometheus text at GET /metrics (x-admin-key).",
    ),
    Setting(
        "GATEWAY_TRACES_PER_SECOND",
        "1",
        "Requests traced per second per instance when traces are exported (0: none); metrics count every request.",
    ),
    Setting("AZURE_CLIENT_ID", None, "Client id of the user-assigned managed identity (DefaultAzureCredential)."),
    Setting(
        "APPLICATIONINSIGHTS_CONNECTION_STRING",
        None,
        "Exports metrics and traces to Application Insights when set.",
    ),
    Setting(
        "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
        None,
        "`Authorization=AAD;ClientId=...` for Entra auth to Application Insights.",
    ),
    Setting("GATEWAY_DEMO_KEY", None, "Subscription key `make run` gives its demo subscription.", scope="local"),
    Setting("PORT", "7071", "Port of the local host.", scope="local"),
)

BY_NAME: dict[str, Setting] = {s.name: s for s in CATALOG}
