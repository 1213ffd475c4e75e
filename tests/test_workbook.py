"""The operators' workbook (infra/workbooks/gateway.workbook.json) asks only for what the gateway emits.

Every metric name a query filters on must be one `shared.telemetry` emits,
every `customDimensions["..."]` it reads one of the dimensions (or, for the
`requests` table, the span attributes) the code sets, and every value it
compares a dimension with one the code produces. The panels the issue asks
for must all be there.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.breaker import Status
from shared.outcomes import Outcome
from shared.telemetry import names as telemetry

ROOT = Path(__file__).resolve().parent.parent
WORKBOOK = ROOT / "infra" / "workbooks" / "gateway.workbook.json"

# Dimension -> the values the code can give it (None: free-form, such as names and ids).
VALUES: dict[str, set[str] | None] = {
    telemetry.OUTCOME: {o.value for o in Outcome},
    telemetry.CACHE: {"hit", "miss", "bypass", "off"},
    telemetry.STREAMED: {"true", "false"},
    telemetry.TOKEN_TYPE: {"input", "output"},
    telemetry.BREAKER_FROM: {s.value for s in Status},
    telemetry.BREAKER_TO: {s.value for s in Status},
    telemetry.PROBE_OK: {"true", "false"},
}


def _items(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for child in node.values():
            yield from _items(child)
    elif isinstance(node, list):
        for child in node:
            yield from _items(child)


@pytest.fixture(scope="module")
def workbook() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(WORKBOOK.read_text())
    return data


@pytest.fixture(scope="module")
def queries(workbook: dict[str, Any]) -> dict[str, str]:
    """Query text by the title (or name) of the item that runs it."""
    found = {}
    for item in _items(workbook):
        if isinstance(item.get("query"), str):
            found[item.get("title") or item.get("name") or item["query"][:40]] = item["query"]
    return found


def test_the_workbook_is_a_workbook_the_bicep_deploys(workbook: dict[str, Any]) -> None:
    assert workbook["version"] == "Notebook/1.0"
    bicep = (ROOT / "infra" / "app" / "monitoring.bicep").read_text()
    assert "loadTextContent('../workbooks/gateway.workbook.json')" in bicep
    names = [i["name"] for i in _items(workbook) if "name" in i and "type" in i]
    assert len(names) == len(set(names)), "item names must be unique"


def test_every_metric_a_query_reads_is_one_the_gateway_emits(queries: dict[str, str]) -> None:
    emitted = set(telemetry.iter_metric_names())
    used: set[str] = set()
    for title, query in queries.items():
        for match in re.finditer(r'\bname\s*(?:==\s*"([^"]+)"|in\s*\(([^)]*)\))', query):
            names = [match.group(1)] if match.group(1) else re.findall(r'"([^"]+)"', match.group(2))
            unknown = set(names) - emitted
            assert not unknown, f"{title}: reads metrics the gateway never emits: {unknown}"
            used.update(names)
        if "customMetrics" in query:
            assert re.search(r"\bname\s*(==|in)", query), f"{title}: customMetrics without a metric name"
    # every metric the gateway emits is on the operators' page
    assert used == emitted


def test_every_dimension_a_query_reads_is_one_the_code_sets(queries: dict[str, str]) -> None:
    known = telemetry.attribute_names()
    for title, query in queries.items():
        for key in re.findall(r'customDimensions\["([^"]+)"\]', query):
            assert key in known, f"{title}: customDimensions[{key!r}] is never set"
        assert "customDimensions." not in query, f'{title}: use customDimensions["..."] (names have dots)'


def test_every_value_compared_with_a_dimension_is_one_the_code_produces(queries: dict[str, str]) -> None:
    for title, query in queries.items():
        # `x = tostring(customDimensions["d"])` aliases, then `x == "v"` / `x in ("v", ...)` comparisons
        aliases = {
            alias: dim for alias, dim in re.findall(r'(\w+)\s*=\s*tostring\(customDimensions\["([^"]+)"\]\)', query)
        }
        direct = re.findall(r'tostring\(customDimensions\["([^"]+)"\]\)\s*==\s*"([^"]*)"', query)
        via_alias = [(aliases[a], v) for a, v in re.findall(r'\b(\w+)\s*==\s*"([^"]*)"', query) if a in aliases]
        listed = [
            (aliases[a], v)
            for a, values in re.findall(r"\b(\w+)\s+in\s*\(([^)]*)\)", query)
            if a in aliases
            for v in re.findall(r'"([^"]*)"', values)
        ]
        for dim, compared in [*direct, *via_alias, *listed]:
            allowed = VALUES.get(dim)
            assert allowed is None or compared in allowed, f"{title}: {dim} is never {compared!r}"


def test_the_overhead_percentiles_read_the_request_spans_attribute(queries: dict[str, str]) -> None:
    query = queries["Gateway overhead percentiles (ms, traced requests)"]
    assert query.startswith("requests")
    assert f'customDimensions["{telemetry.SPAN_OVERHEAD_MS}"]' in query
    assert "percentiles(" in query


@pytest.mark.parametrize(
    ("panel", "metric"),
    [
        ("Tokens over time by subscription", "gen_ai.client.token.usage"),
        ("Tokens over time by deployment and type", "gen_ai.client.token.usage"),
        ("Requests by outcome", "gateway.requests"),
        ("Throttles (429, TPM/RPM) and quota refusals (403) by subscription", "gateway.requests"),
        ("Health probe: share of healthy probes and latency by backend", "gateway.probe.duration"),
        ("Failovers by the backend that failed, and why", "gateway.backend.failovers"),
        ("Circuit breaker trips and recoveries", "gateway.breaker.transitions"),
        ("Cache hit rate by deployment", "gateway.cache.lookups"),
        ("Tokens saved by the cache", "gateway.cache.tokens_saved"),
        ("Gateway overhead, every request: average and worst (ms) by deployment", "gateway.overhead"),
    ],
)
def test_the_operators_panels_are_there(queries: dict[str, str], panel: str, metric: str) -> None:
    assert f'name == "{metric}"' in queries[panel]


def test_queries_are_balanced_and_scoped_to_the_time_range(queries: dict[str, str]) -> None:
    for title, query in queries.items():
        assert query.count("(") == query.count(")"), title
        assert query.count('"') % 2 == 0, title
        assert "{TimeRange}" in query, f"{title}: not limited to the workbook's time range"
