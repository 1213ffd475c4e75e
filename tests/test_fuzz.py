"""Property-based fuzzing of every route, against a real gateway process over HTTP (simulator backends).

Bounded here (2,000 requests, under a minute); `python -m bench.fuzz` runs
the same for longer and prints the figures. Every operation of the surface
is reached in every path shape: JSON bodies from valid to hostile, multipart
uploads (valid, broken boundaries, cut, missing the file part, large parts
within the upload limits, Content-Length above every limit), ids in paths
(real ones the run created, missing, very long, with slashes, escapes and
unicode). The rules: no 5xx but the documented 502, 503 and 504 (and none at
all here, where nothing fails), every 503 with Retry-After; the envelope on
every error; JSON on every answer but the bytes passed through (speech, file
contents, plain-text transcripts) and the pages (SSE events included); no
token reservation left open once the run is over; and the routes are the
ones `/openapi.json` describes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.fuzz import Client, FuzzRequest, Target, fuzz, gateway, settle_and_count_open
from shared.surface import SPECS, Body

pytestmark = pytest.mark.slow

EXAMPLES = 2_000


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
    assert {200, 400, 401, 404, 405, 413} <= set(report.statuses)  # it reached past the first checks, and through
    reached = {operation for operation, _ in report.by_operation}
    assert reached == {spec.operation.value for spec in SPECS}  # every operation of the surface
    uploads = {spec.operation.value for spec in SPECS if spec.body is Body.MULTIPART}
    for status in (200, 400):  # uploads accepted and refused
        assert any(op in uploads and got == status for op, got in report.by_operation), status


def test_the_fuzz_driver_catches_a_bare_error(tmp_path: Path) -> None:
    from bench.fuzz import Answer, problems

    request = FuzzRequest("POST", "/v1/chat/completions", {}, b"{}")
    assert problems(request, Answer(500, {"x-request-id": "r"}, b'{"error": {}}'))
    assert problems(request, Answer(400, {"x-request-id": "r", "content-type": "text/plain"}, b"Bad"))
    fine = b'{"error": {"message": "m", "type": "t", "code": "c", "param": null}}'
    assert problems(request, Answer(503, {"x-request-id": "r", "retry-after": "1"}, fine)) == []
    assert problems(request, Answer(503, {"x-request-id": "r"}, fine)) == ["503 without Retry-After"]
    assert problems(request, Answer(501, {"x-request-id": "r"}, fine)) == ["undocumented 501"]


def test_the_fuzz_driver_lets_bytes_through_only_where_the_gateway_passes_them() -> None:
    from bench.fuzz import Answer, problems

    audio = Answer(200, {"x-request-id": "r", "content-type": "audio/mpeg"}, b"\xff\xfb")
    assert problems(FuzzRequest("POST", "/v1/audio/speech", {}, b"{}"), audio) == []
    assert problems(FuzzRequest("GET", "/openai/files/file-1/content?api-version=x", {}, None), audio) == []
    transcript = Answer(200, {"x-request-id": "r", "content-type": "text/plain"}, b"hello")
    assert problems(FuzzRequest("POST", "/v1/audio/transcriptions", {}, b""), transcript) == []
    assert problems(FuzzRequest("POST", "/v1/embeddings", {}, b"{}"), transcript)
    refused = Answer(400, {"x-request-id": "r", "content-type": "audio/mpeg"}, b"\xff")
    assert problems(FuzzRequest("POST", "/v1/audio/speech", {}, b"{}"), refused)
