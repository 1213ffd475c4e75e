"""Whose fault a failed attempt is, and how one request's failures are settled once its fate is known."""

from __future__ import annotations

import json

import pytest

from shared.backendconfig import BreakerPolicy
from shared.blame import Attribution, Blame, Failure, blame, caller_reason
from shared.errors import AttemptFailed

POLICY = BreakerPolicy()


def _body(**error: object) -> bytes:
    return json.dumps({"error": {"message": "x", **error}}).encode()


def _answer(status: int, body: bytes = b"") -> AttemptFailed:
    return AttemptFailed(str(status), None, status, body=body)


@pytest.mark.parametrize(
    "body",
    [
        _body(code="content_filter", type=None),
        _body(code="InternalServerError", type="invalid_request_error"),
        _body(code="x", innererror={"code": "ResponsibleAIPolicyViolation"}),
        _body(code="context_length_exceeded"),
        _body(code="x", status=400),
    ],
)
def test_a_500_that_gives_a_400_class_reason_is_the_requests_fault(body: bytes) -> None:
    assert caller_reason(body) is not None
    assert blame(POLICY, _answer(500, body)) is Blame.REQUEST


@pytest.mark.parametrize(
    "body", [b"", b"not json", _body(code="InternalServerError", type="server_error"), b'{"error": "x"}']
)
def test_a_plain_500_is_only_suspect(body: bytes) -> None:
    assert caller_reason(body) is None
    assert blame(POLICY, _answer(500, body)) is Blame.SUSPECT


@pytest.mark.parametrize("outcome", ["connect_error", "timeout", "read_error", "empty_stream"])
def test_transport_failures_are_the_backends_fault_at_once(outcome: str) -> None:
    assert blame(POLICY, AttemptFailed(outcome)) is Blame.BACKEND


def test_429_counts_only_when_the_policy_says_so_and_then_at_once() -> None:
    assert blame(POLICY, _answer(429)) is Blame.REQUEST
    assert blame(BreakerPolicy(count_429=True), _answer(429)) is Blame.BACKEND


def _failure(backend: str, failed: AttemptFailed) -> Failure:
    return Failure(f"{backend}|chat", backend, failed)


def test_a_suspect_is_confirmed_only_by_another_backends_success() -> None:
    attribution = Attribution()
    attribution.add(_failure("a", _answer(500)), Blame.SUSPECT)
    assert [f.backend for f in attribution.confirmed()] == ["a"]
    assert attribution.confirmed() == []  # settled once


def test_every_backend_answering_5xx_is_the_requests_fault() -> None:
    attribution = Attribution()
    attribution.add(_failure("a", _answer(500)), Blame.SUSPECT)
    assert attribution.request_fault() is None  # one backend only: nothing is known
    attribution.add(_failure("b", _answer(503)), Blame.SUSPECT)
    last = attribution.request_fault()
    assert last is not None
    assert last.backend == "b"


def test_a_transport_failure_among_the_attempts_is_not_the_requests_fault() -> None:
    attribution = Attribution()
    attribution.add(_failure("a", _answer(500)), Blame.SUSPECT)
    attribution.add(_failure("b", AttemptFailed("connect_error")), Blame.BACKEND)
    assert attribution.request_fault() is None
