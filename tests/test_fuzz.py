"""Property-based fuzzing of every route, against a real gateway process over HTTP (simulator backends).

Bounded here (a few hundred requests); `python -m bench.fuzz` runs the same
for longer and prints the figures. The rules: no 5xx but the documented 502,
503 and 504; the envelope on every error; JSON on every answer (SSE events
included); no token reservation left open once the run is over; and the
routes are the ones `/openapi.json` describes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.fuzz import Client, FuzzRequest, Target, fuzz, gateway, settle_and_count_open

pytestmark = pytest.mark.slow

EXAMPLES = 1_000


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    with gateway(tmp_path_factory.mktemp("fuzz") / "host.log") as running:
        yield running


def test_the_described_routes_are_the_served_ones(target: Target) -> None:
    client = Client(target.host, target.port)
    try:
        for method, path in target.operations:
            concrete = path.replace("{deployment}", "chat").replace("{id}", target.victim_id)
            answer = client.send(FuzzRequest(method.upper(), concrete, {}, b"{}"))
            if answer.status == 404:
                assert json.loads(answer.body)["error"]["code"] != "route_not_found", (method, path)
    finally:
        client.close()


def test_fuzzing_every_route_finds_no_5xx_no_bare_error_and_no_open_reservation(target: Target) -> None:
    report = fuzz(target, EXAMPLES, stop_on_problem=True)
    client = Client(target.host, target.port)
    try:
        left = settle_and_count_open(client)
    finally:
        client.close()
    print(f"\nfuzz: {report.requests} requests, statuses {dict(sorted(report.statuses.items()))}")
    assert report.problems == []
    assert report.requests >= EXAMPLES * 0.9
    assert report.server_errors == 0
    assert left == 0
    assert {200, 400, 401, 404, 405} <= set(report.statuses)  # it reached past the first checks, and through


def test_the_fuzz_driver_catches_a_bare_error(tmp_path: Path) -> None:
    from bench.fuzz import Answer, problems

    request = FuzzRequest("POST", "/v1/chat/completions", {}, b"{}")
    assert problems(request, Answer(500, {"x-request-id": "r"}, b'{"error": {}}'))
    assert problems(request, Answer(400, {"x-request-id": "r", "content-type": "text/plain"}, b"Bad"))
    fine = b'{"error": {"message": "m", "type": "t", "code": "c", "param": null}}'
    assert problems(request, Answer(503, {"x-request-id": "r"}, fine)) == []
