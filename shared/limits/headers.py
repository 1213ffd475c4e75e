"""What a limited caller is told: the x-ratelimit-* headers, as OpenAI sends them, and the 429 / 403 that carry them."""

from __future__ import annotations

import math

from shared.errors import QuotaExceeded, RateLimited, retry_after_headers
from shared.limits.lease import Bucket
from shared.limits.windows import utc_iso
from shared.models import Limits


def limit_headers(limits: Limits, rate: Bucket | None, quota: Bucket | None, now: float) -> dict[str, str]:
    """The x-ratelimit-* headers for the limits that apply, from what this instance knows of the records."""
    headers: dict[str, str] = {}
    if rate is not None:
        # As OpenAI sends them: when this window's capacity comes back.
        reset = f"{max(0.0, rate.window.end - now):.3f}s"
        if limits.tokens_per_minute is not None:
            headers["x-ratelimit-reset-tokens"] = reset
        if limits.requests_per_minute is not None:
            headers["x-ratelimit-reset-requests"] = reset
    if rate is not None and limits.tokens_per_minute is not None:
        headers["x-ratelimit-limit-tokens"] = str(limits.tokens_per_minute)
        headers["x-ratelimit-remaining-tokens"] = str(rate.remaining(rate.caps.tokens, rate.seen_tokens, rate.tokens))
    if rate is not None and limits.requests_per_minute is not None:
        headers["x-ratelimit-limit-requests"] = str(limits.requests_per_minute)
        headers["x-ratelimit-remaining-requests"] = str(
            rate.remaining(rate.caps.requests, rate.seen_requests, rate.requests)
        )
    if quota is not None:
        headers["x-ratelimit-limit-quota-tokens"] = str(limits.token_quota)
        headers["x-ratelimit-remaining-quota-tokens"] = str(
            quota.remaining(quota.caps.tokens, quota.seen_tokens, quota.tokens)
        )
        headers["x-ratelimit-reset-quota"] = utc_iso(quota.window.end)
    return headers


def too_large(limits: Limits, rate: Bucket, tokens: int, now: float) -> RateLimited:
    """429 for a request that could never fit in one rate window: no Retry-After, and the SDK told not to retry."""
    return RateLimited(
        f"Request too large: it needs an estimated {tokens} tokens and this subscription's limit is "
        f"{limits.tokens_per_minute} tokens per minute. Shorten the prompt or set a smaller completion budget "
        "(max_tokens, max_completion_tokens or max_output_tokens; without one the gateway reserves its default).",
        headers={**limit_headers(limits, rate, None, now), "x-should-retry": "false"},
    )


def rate_limited(limits: Limits, rate: Bucket, quota: Bucket | None, now: float) -> RateLimited:
    """429 until the rate window ends: only then does capacity return."""
    wait = max(0.001, rate.window.end - now)
    headers = {**limit_headers(limits, rate, quota, now), **retry_after_headers(wait)}
    if rate.short == "requests":
        headers["x-ratelimit-remaining-requests"] = "0"
        what = f"request rate limit of {limits.requests_per_minute} requests per minute"
    else:
        headers["x-ratelimit-remaining-tokens"] = "0"
        what = f"token rate limit of {limits.tokens_per_minute} tokens per minute"
    return RateLimited(
        f"This subscription has exceeded its {what}. Retry after {math.ceil(wait)} seconds.", headers=headers
    )


def quota_exceeded(limits: Limits, quota: Bucket, rate: Bucket | None, tokens: int, now: float) -> QuotaExceeded:
    """403 with the time the quota period resets."""
    reset = utc_iso(quota.window.end)
    period = limits.token_quota_period.value if limits.token_quota_period else ""
    return QuotaExceeded(
        f"This subscription has used its {period} token quota of {limits.token_quota} tokens "
        f"(this request needs an estimated {tokens}). The quota resets at {reset}.",
        headers=limit_headers(limits, rate, quota, now),
    )
