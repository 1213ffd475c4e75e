"""The backend pool (GATEWAY_BACKENDS) and the breaker policy (GATEWAY_BREAKER): typed values and their parsers."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from shared.settingsreader import SettingsReader

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


@dataclass(frozen=True, slots=True)
class BackendAuth:
    type: str  # "managed_identity" | "api_key"
    api_key: str | None = None  # resolved from the named setting, never logged
    setting: str | None = None


@dataclass(frozen=True, slots=True)
class BackendConfig:
    name: str
    endpoint: str  # no trailing slash
    priority: int
    weight: int
    deployments: Mapping[str, str]  # gateway deployment name -> the backend's own
    auth: BackendAuth
    region: str | None = None
    connect_timeout: float = 5.0
    first_byte_timeout: float = 60.0  # until response headers (and, for streams, the first event)
    read_timeout: float = 60.0  # between two chunks of a body


BREAKER_MODES = ("rate", "count")


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """When a backend deployment's circuit opens, and for how long.

    `mode` "rate" (the default) trips on a failure rate: at least `failure_rate`
    of the requests counted within `window_seconds` failed, once there are
    `min_requests` of them, so one busy pool does not trip on a handful of
    failures. "count" trips on `failures` counted failures within
    `interval_seconds`, whatever the volume.
    """

    failures: int = 5
    interval_seconds: float = 10.0
    trip_seconds: float = 30.0
    status_ranges: tuple[tuple[int, int], ...] = ((500, 599),)
    count_429: bool = False
    accept_retry_after: bool = True
    trial_timeout_seconds: float = 30.0  # a half-open trial not reported back in time is released
    mode: str = "rate"
    failure_rate: float = 0.5
    min_requests: int = 20
    window_seconds: float = 30.0

    def counts(self, status: int) -> bool:
        if status == 429:
            return self.count_429
        return any(lo <= status <= hi for lo, hi in self.status_ranges)


def _timeout(raw: Mapping[str, Any], key: str, default: float, where: str, problems: list[str]) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        problems.append(f"{where}.{key}: must be a positive number of seconds")
        return default
    return float(value)


def _parse_backend(raw: Any, index: int, env: Mapping[str, str], problems: list[str]) -> BackendConfig | None:
    where = f"GATEWAY_BACKENDS[{index}]"
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be an object")
        return None
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        problems.append(f"{where}.name: required, letters, digits, '.', '_' or '-' (got {name!r})")
        name = f"backend{index}"
    where = f"GATEWAY_BACKENDS[{name}]"
    endpoint = raw.get("endpoint")
    parts = urlsplit(endpoint) if isinstance(endpoint, str) else None
    if parts is None or parts.scheme not in {"http", "https"} or not parts.netloc:
        problems.append(f"{where}.endpoint: required, an http(s) URL (got {endpoint!r})")
        endpoint = "http://invalid"
    priority = raw.get("priority", 1)
    if isinstance(priority, bool) or not isinstance(priority, int) or priority < 0:
        problems.append(f"{where}.priority: a whole number >= 0 (got {priority!r})")
        priority = 1
    weight = raw.get("weight", 1)
    if isinstance(weight, bool) or not isinstance(weight, int) or weight < 1:
        problems.append(f"{where}.weight: a whole number >= 1 (got {weight!r})")
        weight = 1
    deployments = raw.get("deployments")
    if isinstance(deployments, list):  # shorthand: same name on the gateway and the backend
        deployments = {d: d for d in deployments if isinstance(d, str)}
    if not isinstance(deployments, dict) or not deployments:
        problems.append(f"{where}.deployments: required, a non-empty map of gateway name -> backend deployment")
        deployments = {}
    for key, value in deployments.items():
        if not isinstance(value, str) or not _NAME_RE.match(key) or not _NAME_RE.match(value):
            problems.append(f"{where}.deployments: invalid entry {key!r}: {value!r}")
    auth_raw = raw.get("auth", {"type": "managed_identity"})
    auth = BackendAuth(type="managed_identity")
    if not isinstance(auth_raw, dict) or auth_raw.get("type") not in {"managed_identity", "api_key"}:
        problems.append(f'{where}.auth: {{"type": "managed_identity"}} or {{"type": "api_key", "setting": "NAME"}}')
    elif auth_raw["type"] == "api_key":
        setting = auth_raw.get("setting")
        if not isinstance(setting, str) or not setting:
            problems.append(f"{where}.auth.setting: the app setting that holds the key is required")
        elif not env.get(setting):
            problems.append(f"{where}.auth.setting: app setting {setting} is not set")
        else:
            auth = BackendAuth(type="api_key", api_key=env[setting], setting=setting)
    region = raw.get("region")
    if region is not None and not isinstance(region, str):
        problems.append(f"{where}.region: a string")
        region = None
    timeouts = raw.get("timeouts", {})
    if not isinstance(timeouts, dict):
        problems.append(f"{where}.timeouts: an object")
        timeouts = {}
    known = {"name", "endpoint", "priority", "weight", "deployments", "auth", "region", "timeouts"}
    for key in sorted(set(raw) - known):
        problems.append(f"{where}: unknown field {key!r}")
    return BackendConfig(
        name=name,
        endpoint=str(endpoint).rstrip("/"),
        priority=priority,
        weight=weight,
        deployments=dict(deployments),
        auth=auth,
        region=region,
        connect_timeout=_timeout(timeouts, "connect", 5.0, where, problems),
        first_byte_timeout=_timeout(timeouts, "first_byte", 60.0, where, problems),
        read_timeout=_timeout(timeouts, "read", 60.0, where, problems),
    )


def parse_backends(r: SettingsReader) -> tuple[BackendConfig, ...]:
    raw = r.json("GATEWAY_BACKENDS")
    if raw is None:
        if r.raw("GATEWAY_BACKENDS") is None:
            r.problems.append("GATEWAY_BACKENDS: required (a JSON list of backends; see the README)")
        return ()
    if not isinstance(raw, list) or not raw:
        r.problems.append("GATEWAY_BACKENDS: must be a non-empty JSON list")
        return ()
    backends = [b for i, item in enumerate(raw) if (b := _parse_backend(item, i, r.env, r.problems))]
    names = [b.name for b in backends]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        r.problems.append(f"GATEWAY_BACKENDS: backend name {dup!r} is used more than once")
    return tuple(backends)


_BREAKER_FIELDS = {
    "mode",
    "failure_rate",
    "min_requests",
    "window_seconds",
    "failures",
    "interval_seconds",
    "trip_seconds",
    "status_ranges",
    "count_429",
    "accept_retry_after",
    "trial_timeout_seconds",
}
_COUNT_ONLY, _RATE_ONLY = {"failures", "interval_seconds"}, {"failure_rate", "min_requests", "window_seconds"}


def _whole(raw: Mapping[str, Any], key: str, default: int, where: str, problems: list[str]) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        problems.append(f"{where}.{key}: a whole number >= 1")
        return default
    return value


def parse_breaker(r: SettingsReader) -> BreakerPolicy:
    raw = r.json("GATEWAY_BREAKER") or {}
    where = "GATEWAY_BREAKER"
    if not isinstance(raw, dict):
        r.problems.append(f"{where}: must be a JSON object")
        return BreakerPolicy()
    base = BreakerPolicy()
    ranges: list[tuple[int, int]] = []
    for item in raw.get("status_ranges", ["500-599"]):
        match = re.fullmatch(r"(\d{3})(?:-(\d{3}))?", str(item))
        if not match:
            r.problems.append(f"{where}.status_ranges: {item!r} is not like 500 or 500-599")
            continue
        lo = int(match.group(1))
        ranges.append((lo, int(match.group(2) or lo)))
    for key in sorted(set(raw) - _BREAKER_FIELDS):
        r.problems.append(f"{where}: unknown field {key!r}")
    mode = raw.get("mode")
    if mode is None:
        # A policy written for the count rule, before the rate rule existed, keeps its meaning.
        mode = "count" if set(raw) & _COUNT_ONLY and not set(raw) & _RATE_ONLY else base.mode
    if mode not in BREAKER_MODES:
        r.problems.append(f"{where}.mode: {mode!r} is not one of {', '.join(BREAKER_MODES)}")
        mode = base.mode
    # A field of the other mode would be silently ignored: say so rather than run a policy nobody wrote.
    for key in sorted(set(raw) & (_RATE_ONLY if mode == "count" else _COUNT_ONLY)):
        r.problems.append(f'{where}.{key}: applies to mode "{"rate" if mode == "count" else "count"}", not "{mode}"')
    rate = raw.get("failure_rate", base.failure_rate)
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate <= 1:
        r.problems.append(f"{where}.failure_rate: a fraction above 0, at most 1")
        rate = base.failure_rate
    return BreakerPolicy(
        failures=_whole(raw, "failures", base.failures, where, r.problems),
        interval_seconds=_timeout(raw, "interval_seconds", base.interval_seconds, where, r.problems),
        trip_seconds=_timeout(raw, "trip_seconds", base.trip_seconds, where, r.problems),
        status_ranges=tuple(ranges) or base.status_ranges,
        count_429=bool(raw.get("count_429", False)),
        accept_retry_after=bool(raw.get("accept_retry_after", True)),
        trial_timeout_seconds=_timeout(raw, "trial_timeout_seconds", base.trial_timeout_seconds, where, r.problems),
        mode=mode,
        failure_rate=float(rate),
        min_requests=_whole(raw, "min_requests", base.min_requests, where, r.problems),
        window_seconds=_timeout(raw, "window_seconds", base.window_seconds, where, r.problems),
    )
