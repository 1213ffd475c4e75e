"""GATEWAY_CONTENT_SAFETY: where the service is, how the gateway signs in, what it checks for whom, and what
happens when it cannot answer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

CATEGORIES = ("Hate", "Sexual", "Violence", "SelfHarm")
# Azure OpenAI's default filter blocks medium and high: severity 4 and above on the four-level scale.
DEFAULT_THRESHOLD = 4


@dataclass(frozen=True, slots=True)
class ContentSafetyConfig:
    endpoint: str  # https://<account>.cognitiveservices.azure.com, no trailing slash
    api_key: str | None = None  # from the named setting (the simulator); None: managed identity
    prompt_shields: bool = True
    # Block when a category's severity reaches its threshold; a category left out is not analysed.
    thresholds: Mapping[str, int] = field(
        default_factory=lambda: MappingProxyType(dict.fromkeys(CATEGORIES, DEFAULT_THRESHOLD))
    )
    deployments: frozenset[str] = frozenset()  # empty: every deployment
    subscriptions: frozenset[str] = frozenset()  # empty: every subscription
    fail_open: bool = False  # the service unavailable: let the request through (True) or refuse it with 503
    timeout_seconds: float = 5.0
    max_chunks: int = 4  # text analysis takes 10,000 characters per call; longer prompts take several calls

    def applies(self, subscription_id: str, deployment: str) -> bool:
        return (not self.deployments or deployment in self.deployments) and (
            not self.subscriptions or subscription_id in self.subscriptions
        )


_FIELDS = {
    "endpoint",
    "auth",
    "prompt_shields",
    "categories",
    "deployments",
    "subscriptions",
    "on_unavailable",
    "timeout_seconds",
    "max_chunks",
}
_WHERE = "GATEWAY_CONTENT_SAFETY"


def _names(raw: Any, name: str, problems: list[str]) -> frozenset[str]:
    value = raw.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        problems.append(f"{_WHERE}.{name}: a list of names")
        return frozenset()
    return frozenset(value)


def parse_content_safety_config(
    raw: Any, env: Mapping[str, str], deployments: frozenset[str], problems: list[str]
) -> ContentSafetyConfig | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        problems.append(f"{_WHERE}: must be a JSON object")
        return None
    for key in sorted(set(raw) - _FIELDS):
        problems.append(f"{_WHERE}: unknown field {key!r}")
    endpoint = raw.get("endpoint")
    parts = urlsplit(endpoint) if isinstance(endpoint, str) else None
    if parts is None or parts.scheme not in {"http", "https"} or not parts.netloc:
        problems.append(f"{_WHERE}.endpoint: required, the account's http(s) URL (got {endpoint!r})")
        endpoint = "http://invalid"
    auth = raw.get("auth", {"type": "managed_identity"})
    api_key: str | None = None
    if not isinstance(auth, dict) or auth.get("type") not in {"managed_identity", "api_key"}:
        problems.append(f'{_WHERE}.auth: {{"type": "managed_identity"}} or {{"type": "api_key", "setting": "NAME"}}')
    elif auth["type"] == "api_key":
        setting = auth.get("setting")
        if not isinstance(setting, str) or not env.get(setting):
            problems.append(f"{_WHERE}.auth.setting: the app setting that holds the key is required and must be set")
        else:
            api_key = env[setting]
    categories = raw.get("categories", dict.fromkeys(CATEGORIES, DEFAULT_THRESHOLD))
    thresholds: dict[str, int] = {}
    if not isinstance(categories, dict):
        problems.append(f"{_WHERE}.categories: {{category: severity threshold}} for {', '.join(CATEGORIES)}")
    else:
        for name, level in categories.items():
            if name not in CATEGORIES:
                problems.append(f"{_WHERE}.categories: unknown category {name!r} ({', '.join(CATEGORIES)})")
            elif isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= 7:
                problems.append(f"{_WHERE}.categories.{name}: a severity from 1 to 7 (blocked at or above it)")
            else:
                thresholds[name] = level
    shields = raw.get("prompt_shields", True)
    if not isinstance(shields, bool):
        problems.append(f"{_WHERE}.prompt_shields: true or false")
        shields = True
    on_unavailable = raw.get("on_unavailable", "closed")
    if on_unavailable not in {"open", "closed"}:
        problems.append(f"{_WHERE}.on_unavailable: open (let requests through) or closed (refuse them)")
    timeout = raw.get("timeout_seconds", 5.0)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        problems.append(f"{_WHERE}.timeout_seconds: a positive number")
        timeout = 5.0
    chunks = raw.get("max_chunks", 4)
    if isinstance(chunks, bool) or not isinstance(chunks, int) or not 1 <= chunks <= 20:
        problems.append(f"{_WHERE}.max_chunks: a whole number from 1 to 20")
        chunks = 4
    only = _names(raw, "deployments", problems)
    for unknown in sorted(only - deployments):
        problems.append(f"{_WHERE}.deployments: {unknown!r} is not a deployment of GATEWAY_BACKENDS")
    return ContentSafetyConfig(
        endpoint=str(endpoint).rstrip("/"),
        api_key=api_key,
        prompt_shields=shields,
        thresholds=MappingProxyType(thresholds),
        deployments=only,
        subscriptions=_names(raw, "subscriptions", problems),
        fail_open=on_unavailable == "open",
        timeout_seconds=float(timeout),
        max_chunks=chunks,
    )
