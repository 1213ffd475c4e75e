"""Settings parsing: defaults, backends, and every problem reported at once."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from shared.config import load_settings
from shared.errors import ConfigError

BACKEND = {"name": "a", "endpoint": "https://a.openai.azure.com/", "deployments": {"chat": "gpt-4o-mini"}}


def test_minimal_settings_use_documented_defaults() -> None:
    settings = load_settings({"GATEWAY_BACKENDS": json.dumps([BACKEND])})
    assert settings.backends[0].endpoint == "https://a.openai.azure.com"
    assert settings.backends[0].auth.type == "managed_identity"
    assert settings.max_attempts == 3
    assert settings.max_body_bytes == 4 * 1024 * 1024
    assert settings.deployments == {"chat"}
    assert settings.storage is None


def test_api_key_auth_reads_the_named_setting() -> None:
    backend = {**BACKEND, "auth": {"type": "api_key", "setting": "A_KEY"}}
    settings = load_settings({"GATEWAY_BACKENDS": json.dumps([backend]), "A_KEY": "secret"})
    assert settings.backends[0].auth.api_key == "secret"


def test_every_problem_is_listed_together() -> None:
    bad = [
        {"name": "a", "endpoint": "ftp://x", "deployments": {}, "priority": -1},
        {"name": "a", "endpoint": "https://b", "deployments": ["chat"], "auth": {"type": "api_key", "setting": "NOPE"}},
    ]
    env = {
        "GATEWAY_BACKENDS": json.dumps(bad),
        "GATEWAY_MAX_ATTEMPTS": "zero",
        "GATEWAY_BREAKER": '{"status_ranges": ["5xx"], "oops": 1}',
        "GATEWAY_CACHE": "[",
    }
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    text = "\n".join(info.value.problems)
    for fragment in (
        "endpoint",
        "deployments",
        "priority",
        "NOPE is not set",
        "used more than once",
        "GATEWAY_MAX_ATTEMPTS",
        "5xx",
        "unknown field 'oops'",
        "GATEWAY_CACHE",
    ):
        assert fragment in text
    assert len(info.value.problems) >= 9


def test_missing_backends_is_a_problem() -> None:
    with pytest.raises(ConfigError, match="GATEWAY_BACKENDS: required"):
        load_settings({})


def test_breaker_policy_from_json() -> None:
    env = {
        "GATEWAY_BACKENDS": json.dumps([BACKEND]),
        "GATEWAY_BREAKER": '{"mode": "count", "failures": 2, "status_ranges": ["500-599", "408"], "count_429": true}',
    }
    policy = load_settings(env).breaker
    assert policy.failures == 2
    assert policy.counts(408)
    assert policy.counts(429)


def _breaker(raw: str) -> Any:
    return load_settings({"GATEWAY_BACKENDS": json.dumps([BACKEND]), "GATEWAY_BREAKER": raw}).breaker


def test_the_breaker_defaults_to_the_rate_rule() -> None:
    policy = _breaker('{"failure_rate": 0.25, "min_requests": 40, "window_seconds": 60}')
    assert (policy.mode, policy.failure_rate, policy.min_requests, policy.window_seconds) == ("rate", 0.25, 40, 60.0)
    assert _breaker("{}").mode == "rate"


def test_a_count_policy_written_before_the_rate_rule_keeps_its_meaning() -> None:
    policy = _breaker('{"failures": 3, "interval_seconds": 5}')
    assert (policy.mode, policy.failures, policy.interval_seconds) == ("count", 3, 5.0)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ('{"mode": "rate", "failures": 3}', 'GATEWAY_BREAKER.failures: applies to mode "count"'),
        ('{"mode": "count", "min_requests": 3}', 'GATEWAY_BREAKER.min_requests: applies to mode "rate"'),
        ('{"mode": "sometimes"}', "GATEWAY_BREAKER.mode"),
        ('{"failure_rate": 1.5}', "GATEWAY_BREAKER.failure_rate"),
        ('{"min_requests": 0}', "GATEWAY_BREAKER.min_requests"),
    ],
)
def test_a_breaker_policy_that_mixes_or_misstates_its_rule_is_refused(raw: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(problem)):
        _breaker(raw)


def test_embedded_stores_are_refused_when_running_in_azure() -> None:
    from shared.stores.factory import build_stores

    env = {"GATEWAY_BACKENDS": json.dumps([BACKEND]), "WEBSITE_SITE_NAME": "my-gateway"}
    with pytest.raises(ConfigError, match="No storage configured while running in Azure"):
        build_stores(load_settings(env))
    assert build_stores(load_settings({"GATEWAY_BACKENDS": json.dumps([BACKEND])})).kind == "embedded"


def test_cache_and_prices_are_parsed_once_into_typed_frozen_values() -> None:
    from dataclasses import FrozenInstanceError

    from shared.cache.config import CacheConfig

    env = {
        "GATEWAY_BACKENDS": json.dumps([BACKEND]),
        "GATEWAY_CACHE": json.dumps({"deployments": ["chat"], "ttl_seconds": 60}),
        "GATEWAY_PRICES": json.dumps({"chat": {"input": 0.15, "output": 0.6}}),
    }
    settings = load_settings(env)
    assert isinstance(settings.cache, CacheConfig)
    assert settings.cache.deployments == {"chat"}
    assert settings.cache.ttl_seconds == 60
    assert (settings.prices["chat"].input, settings.prices["chat"].output) == (0.15, 0.6)
    assert dict(settings.prices["chat"]) == {"input": 0.15, "output": 0.6}
    with pytest.raises(FrozenInstanceError):
        settings.prices["chat"].input = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        settings.prices["other"] = settings.prices["chat"]  # type: ignore[index]


def test_cache_and_price_problems_are_listed_with_every_other_problem() -> None:
    env = {
        "GATEWAY_BACKENDS": json.dumps([{**BACKEND, "priority": -1}]),
        "GATEWAY_CACHE": json.dumps({"deployments": ["nope"], "scope": "everyone"}),
        "GATEWAY_PRICES": json.dumps({"chat": {"input": 0.15, "ouput": 0.6}}),
    }
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    text = "\n".join(info.value.problems)
    for fragment in (
        "priority",
        "GATEWAY_CACHE.deployments: 'nope' is not a deployment",
        "GATEWAY_CACHE.scope",
        "GATEWAY_PRICES[chat]: unknown token type 'ouput'",
    ):
        assert fragment in text


def test_the_stores_factory_picks_the_cache_vector_store() -> None:
    from shared.clock import ManualClock
    from shared.stores.factory import build_vector_store

    cache = {"GATEWAY_CACHE": json.dumps({"deployments": ["chat"]}), "GATEWAY_BACKENDS": json.dumps([BACKEND])}
    embedded = load_settings(cache)
    assert embedded.cache is not None
    assert build_vector_store(embedded, embedded.cache, clock=ManualClock()).kind == "embedded"
    cosmos = load_settings({**cache, "GATEWAY_COSMOS__accountEndpoint": "https://acct.documents.azure.com:443/"})
    assert cosmos.cache is not None
    assert build_vector_store(cosmos, cosmos.cache, clock=ManualClock()).kind == "cosmos"  # nothing connects yet
