"""Fuzz every route of a real gateway over HTTP: no 5xx but 502/503/504, the envelope on every error, JSON on
every answer, and no token reservation left open afterwards.

The routes come from the gateway's own `/openapi.json`; Hypothesis generates
requests around them (methods, paths, queries, keys, and bodies from valid
through mistyped to hostile: deep nesting, lone surrogates, NaN, non-JSON).
The gateway is `python -m local.host` in a process of its own, with two
simulator backends and embedded stores.

    python -m bench.fuzz                    # 5,000 requests
    python -m bench.fuzz --examples 20000 --seed 7

prints requests generated, a histogram of statuses, the 5xx count (target 0)
and every broken rule with the request that broke it. `tests/test_fuzz.py`
runs a bounded version of the same in `make test`.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import seed as fixed_seed
from hypothesis import strategies as st

from simulator import SimulatorConfig, SimulatorThread

ROOT = Path(__file__).resolve().parent.parent
ADMIN_KEY = "fuzz-admin-key-0123456789"
DEPLOYMENTS = ("chat", "embed")
DOCUMENTED_5XX = frozenset({502, 503, 504})
_PAGES = ("/chat", "/dashboard")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "PROPFIND")


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    port: int
    caller_key: str  # a subscription with limits, never changed by the admin calls the fuzzer makes
    victim_id: str  # a subscription the fuzzer may patch, regenerate and delete
    operations: tuple[tuple[str, str], ...]  # (method, path template), from /openapi.json

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(sorted({path for _, path in self.operations}))


@dataclass(frozen=True, slots=True)
class FuzzRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes | None

    def short(self) -> str:
        body = (self.body or b"")[:160]
        return f"{self.method} {self.path[:160]} headers={sorted(self.headers)} body={body!r}"


@dataclass(slots=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(slots=True)
class Report:
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)


# --- what the fuzzer sends ----------------------------------------------------------------------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
_json_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)
_messages = st.one_of(
    st.just([{"role": "user", "content": "hi"}]),
    st.lists(
        st.fixed_dictionaries(
            {"role": st.sampled_from(["user", "system", "assistant"])},
            optional={"content": st.one_of(st.text(max_size=40), _json_values)},
        ),
        max_size=3,
    ),
    _json_values,
)
_chat = st.fixed_dictionaries(
    {"messages": _messages},
    optional={
        "model": st.one_of(st.sampled_from(DEPLOYMENTS), st.text(max_size=30), _json_values),
        "stream": st.one_of(st.booleans(), _json_values),
        "stream_options": st.one_of(st.just({"include_usage": True}), _json_values),
        "max_tokens": st.one_of(st.integers(min_value=-5, max_value=40), _json_values),
        "n": st.one_of(st.integers(min_value=-1, max_value=3), _json_values),
        "temperature": _json_values,
    },
)
_embeddings = st.fixed_dictionaries(
    {},
    optional={
        "input": st.one_of(st.text(max_size=30), st.lists(st.text(max_size=10), max_size=3), _json_values),
        "model": st.one_of(st.sampled_from(DEPLOYMENTS), _json_values),
    },
)
_subscription_fields = st.fixed_dictionaries(
    {},
    optional={
        "name": st.one_of(st.text(max_size=30), _json_values),
        "state": st.one_of(st.sampled_from(["active", "suspended"]), _json_values),
        "expires_at": st.one_of(
            st.sampled_from(["2030-01-01", "nan", "inf", "-inf", "1e300", "9999-12-31T23:59:59-23:59", 1e300, -1]),
            _json_values,
        ),
        "tokens_per_minute": st.one_of(st.integers(min_value=-1, max_value=2**64), _json_values),
        "token_quota": _json_values,
        "token_quota_period": st.one_of(st.sampled_from(["daily", "monthly", "yearly"]), _json_values),
        "allowed_deployments": _json_values,
        "cache_opt_out": _json_values,
        "key": st.one_of(st.sampled_from(["primary", "secondary"]), _json_values),
    },
)


def _hostile_bytes() -> st.SearchStrategy[bytes]:
    deep = st.integers(min_value=60, max_value=20_000).map(lambda n: b'{"messages": ' + b"[" * n + b"]" * n + b"}")
    surrogate = st.sampled_from(
        [
            rb'{"messages": [{"role": "user", "content": "\ud800"}]}',
            rb'{"input": "\udfff", "model": "embed"}',
            rb'{"name": "\ud83d"}',
            b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": NaN}',
            b'{"expires_at": Infinity, "name": "x"}',
        ]
    )
    return st.one_of(deep, surrogate, st.binary(max_size=64))


def _dump(value: Any) -> bytes:
    return json.dumps(value).encode()


_bodies = st.one_of(
    st.none(),
    _chat.map(_dump),
    _embeddings.map(_dump),
    _subscription_fields.map(_dump),
    _json_values.map(_dump),
    _hostile_bytes(),
)


def _body_for(path: str) -> st.SearchStrategy[bytes | None]:
    """Mostly the shape the route reads (so requests get past the first check), else anything."""
    if path.endswith("chat/completions"):
        fitting = _chat.map(_dump)
    elif path.endswith("embeddings"):
        fitting = _embeddings.map(_dump)
    elif path.startswith("/gateway/admin/subscriptions"):
        fitting = _subscription_fields.map(_dump)
    else:
        return _bodies
    return st.one_of(fitting, fitting, fitting, _bodies)


_times = st.one_of(
    st.sampled_from(["nan", "inf", "-inf", "1e18", "2e18", "0", "2025-03-01", "2025-03-01T10:00Z", "x", ""]),
    st.floats(allow_nan=True).map(str),
    st.text(max_size=12),
)
_query_values = {
    "api-version": st.one_of(st.just("2024-10-21"), st.text(max_size=50)),
    "from": _times,
    "to": _times,
    "group_by": st.one_of(st.sampled_from(["subscription", "deployment", "backend"]), st.text(max_size=10)),
    "subscription": st.text(max_size=30),
    "period": st.one_of(st.sampled_from(["hourly", "daily", "weekly", "monthly"]), st.text(max_size=10)),
    "at": _times,
    "hours": st.one_of(st.integers(min_value=-5, max_value=10**6).map(str), st.text(max_size=10)),
    "limit": st.one_of(st.integers(min_value=-5, max_value=10**20).map(str), st.text(max_size=10)),
}


def _query() -> st.SearchStrategy[str]:
    from urllib.parse import urlencode  # noqa: PLC0415

    return st.dictionaries(st.sampled_from(sorted(_query_values)), st.text(max_size=0), max_size=3).flatmap(
        lambda chosen: st.fixed_dictionaries({k: _query_values[k] for k in chosen}).map(
            lambda q: ("?" + urlencode(q, safe="")) if q else ""
        )
    )


def _header_value(text: str) -> str:
    # What an HTTP client can send at all: printable ASCII, no line breaks, no surrounding blanks.
    return "".join(c for c in text if " " <= c <= "~").strip() or "x"


def requests(target: Target) -> st.SearchStrategy[FuzzRequest]:
    """Requests around the documented routes, and some beside them."""
    segment = st.text(alphabet=st.characters(codec="ascii", exclude_characters="/?#%"), min_size=1, max_size=20)

    def fill(template: str) -> st.SearchStrategy[str]:
        params = re.findall(r"\{(\w+)\}", template)
        choices = {
            "deployment": st.one_of(st.sampled_from(DEPLOYMENTS), segment),
            "id": st.one_of(st.just(target.victim_id), st.just("sub-missing"), segment),
            "request_id": segment,
        }
        return st.fixed_dictionaries({p: choices.get(p, segment) for p in params}).map(
            lambda values: re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], template)
        )

    documented = st.sampled_from(target.paths).flatmap(fill)
    beside = st.one_of(
        documented.map(lambda p: p + "/extra"),
        st.lists(segment, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts)),
        st.sampled_from(["/", "/openai", "/gateway/admin", "/gateway/admin/", "/v1", "/admin/x"]),
    )
    good_headers = {"api-key": target.caller_key, "x-admin-key": ADMIN_KEY, "content-type": "application/json"}
    any_headers = st.fixed_dictionaries(
        {},
        optional={
            "api-key": st.one_of(st.just(target.caller_key), st.text(max_size=10)),
            "x-admin-key": st.one_of(st.just(ADMIN_KEY), st.just("wrong")),
            "content-type": st.sampled_from(["application/json", "text/plain"]),
            "x-request-id": st.text(max_size=20),
        },
    ).map(lambda h: {k: _header_value(v) for k, v in h.items()})
    headers = st.one_of(st.just(good_headers), st.just(good_headers), st.just(good_headers), any_headers)

    def as_documented(operation: tuple[str, str]) -> st.SearchStrategy[FuzzRequest]:
        method, template = operation
        return st.builds(
            lambda p, q, h, b: FuzzRequest(method.upper(), p + q, h, b),
            fill(template),
            _query(),
            headers,
            _body_for(template),
        )

    on_route = st.sampled_from(target.operations).flatmap(as_documented)
    off_route = st.builds(
        lambda m, p, q, h, b: FuzzRequest(m, p + q, h, b),
        st.sampled_from(METHODS),
        st.one_of(documented, beside),
        _query(),
        headers,
        _bodies,
    )
    return st.one_of(on_route, on_route, on_route, off_route)


# --- sending and judging ------------------------------------------------------------------------


class Client:
    """One keep-alive connection, reopened whenever the server closes it."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._conn: http.client.HTTPConnection | None = None

    def send(self, request: FuzzRequest) -> Answer:
        for attempt in range(2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            try:
                self._conn.request(
                    request.method, _quote_path(request.path), body=request.body, headers=request.headers
                )
                response = self._conn.getresponse()
                body = response.read()
            except (http.client.HTTPException, ConnectionError) as exc:
                self.close()
                if attempt:
                    raise RuntimeError(f"no answer: {exc!r}") from exc
                continue
            if response.will_close:
                self.close()
            return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, body)
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _quote_path(path: str) -> str:
    from urllib.parse import quote  # noqa: PLC0415

    route, _, query = path.partition("?")
    return quote(route, safe="/:@!$&'()*+,;=-._~") + (f"?{query}" if query else "")


def problems(request: FuzzRequest, answer: Answer) -> list[str]:
    """The rules every answer keeps; empty when it keeps them all."""
    found: list[str] = []
    if answer.status >= 500 and answer.status not in DOCUMENTED_5XX:
        found.append(f"undocumented {answer.status}")
    if "x-request-id" not in answer.headers and answer.status != 400:  # a malformed request has no id to echo
        found.append("no x-request-id")
    if request.method == "HEAD" or answer.status == 204:
        return found
    media = answer.headers.get("content-type", "")
    if media.startswith("text/event-stream"):
        for line in answer.body.decode("utf-8", "replace").splitlines():
            if line.startswith("data: ") and line != "data: [DONE]":
                try:
                    json.loads(line[6:])
                except ValueError:
                    found.append(f"an event that is not JSON: {line[:80]!r}")
        return found
    if media.startswith("text/plain") and request.path.startswith("/metrics") and answer.status == 200:
        return found
    route = request.path.split("?", 1)[0]
    if answer.status < 400 and (route == "/" or route.startswith(_PAGES)):
        return found  # the browser pages: HTML, scripts, styles, and the redirect to them
    try:
        payload = json.loads(answer.body)
    except ValueError:
        return [*found, f"{answer.status} {media} not JSON: {answer.body[:120]!r}"]
    if answer.status >= 400:
        error = payload.get("error") if isinstance(payload, dict) else None
        if not isinstance(error, dict) or set(error) != {"message", "type", "code", "param"}:
            found.append(f"{answer.status} without the envelope: {answer.body[:160]!r}")
        elif len(answer.body) > 2_000:
            found.append(f"{answer.status} error of {len(answer.body)} bytes (echoes the request?)")
    return found


def open_reservations(client: Client) -> int:
    stats = client.send(FuzzRequest("GET", "/gateway/admin/stats", {"x-admin-key": ADMIN_KEY}, None))
    return int(json.loads(stats.body)["limits"]["open_reservations"])


def settle_and_count_open(client: Client, seconds: float = 5.0) -> int:
    """Open reservations once the streams still being metered have been (bounded wait)."""
    deadline = time.monotonic() + seconds
    while (left := open_reservations(client)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


# --- a gateway to fuzz --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _admin(client: Client, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = client.send(
        FuzzRequest(method, f"/gateway/admin/{path}", {"x-admin-key": ADMIN_KEY}, json.dumps(body).encode())
    )
    if answer.status >= 300:
        raise RuntimeError(f"{method} {path}: {answer.status} {answer.body[:200]!r}")
    return json.loads(answer.body)  # type: ignore[no-any-return]


@contextmanager
def gateway(log_path: Path) -> Iterator[Target]:
    """`python -m local.host` with two simulator backends and embedded stores, and two subscriptions."""
    sims = [
        SimulatorThread(SimulatorConfig(name=name, deployments=DEPLOYMENTS, api_key="sim-key")).start()
        for name in ("fuzz-a", "fuzz-b")
    ]
    port = _free_port()
    backends = [
        {"name": sim.config.name, "endpoint": sim.url, "deployments": list(DEPLOYMENTS)}
        | {"auth": {"type": "api_key", "setting": "SIM_KEY"}}
        for sim in sims
    ]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")},
        "GATEWAY_BACKENDS": json.dumps(backends),
        "SIM_KEY": "sim-key",
        "GATEWAY_ADMIN_KEY": ADMIN_KEY,
        "GATEWAY_METRICS_ENDPOINT": "true",
        "GATEWAY_STORAGE": "",
        "PYTHONPATH": str(ROOT),
    }
    with log_path.open("wb") as sink:
        host = subprocess.Popen(
            [sys.executable, "-m", "local.host", "--port", str(port), "--log-level", "WARNING"],
            cwd=log_path.parent,  # no local.settings.json there: only this environment
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    client = Client("127.0.0.1", port)
    try:
        deadline = time.monotonic() + 30
        while True:
            if host.poll() is not None:
                raise RuntimeError(f"the gateway exited: {log_path.read_text(errors='replace')[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start within 30 s")
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        caller = _admin(client, "POST", "subscriptions", {"name": "fuzz-caller", "tokens_per_minute": 10**9})
        victim = _admin(client, "POST", "subscriptions", {"name": "fuzz-victim"})
        spec = json.loads(client.send(FuzzRequest("GET", "/openapi.json", {}, None)).body)
        operations = tuple(sorted((method, path) for path, item in spec["paths"].items() for method in item))
        yield Target("127.0.0.1", port, caller["primary_key"], victim["id"], operations)
    finally:
        client.close()
        host.send_signal(signal.SIGINT)
        try:
            host.wait(timeout=15)
        except subprocess.TimeoutExpired:
            host.kill()
            host.wait()
        for sim in sims:
            sim.stop()


def fuzz(target: Target, examples: int, *, seed: int | None = None, stop_on_problem: bool = False) -> Report:
    """Send `examples` generated requests; count statuses and broken rules (or stop at the first one)."""
    report = Report()
    client = Client(target.host, target.port)

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
    )
    @given(requests(target))
    def one(request: FuzzRequest) -> None:
        answer = client.send(request)
        report.requests += 1
        report.statuses[answer.status] += 1
        broken = problems(request, answer)
        if broken:
            report.problems.append(f"{'; '.join(broken)} <- {request.short()}")
            if stop_on_problem:
                raise AssertionError(report.problems[-1])

    if seed is not None:
        one = fixed_seed(seed)(one)
    try:
        one()
    finally:
        client.close()
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--log", type=Path, default=Path("/tmp/gateway-fuzz/host.log"))  # noqa: S108 - a scratch log
    args = parser.parse_args(argv)
    args.log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with gateway(args.log) as target:
        report = fuzz(target, args.examples, seed=args.seed)
        left = settle_and_count_open(Client(target.host, target.port))
    print(
        f"routes described: {len(target.paths)}; requests generated: {report.requests} "
        f"in {time.monotonic() - started:.0f} s"
    )
    print("statuses: " + ", ".join(f"{status}: {n}" for status, n in sorted(report.statuses.items())))
    print(f"5xx: {report.server_errors} (documented 502/503/504 included; target 0)")
    print(f"reservations left open: {left}")
    print(f"broken rules: {len(report.problems)}")
    for problem in report.problems[:20]:
        print("  " + problem)
    if report.problems or left or report.server_errors:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
