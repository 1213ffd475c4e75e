"""The one rendering of an error: every 503 says when to retry."""

from __future__ import annotations

import pytest

from shared.errors import (
    DEFAULT_RETRY_SECONDS,
    BadRequest,
    GatewayError,
    NoBackendAvailable,
    ServiceUnavailable,
    error_response,
    retry_after_headers,
)


@pytest.mark.parametrize("error", [ServiceUnavailable("storage is down"), NoBackendAvailable("nothing answers")])
def test_a_503_without_a_retry_time_gets_the_short_default(error: GatewayError) -> None:
    response = error_response(error, "rid")
    assert response.status == 503
    assert response.headers["Retry-After"] == str(int(DEFAULT_RETRY_SECONDS))
    assert response.headers["retry-after-ms"] == str(int(DEFAULT_RETRY_SECONDS * 1000))


def test_a_503_keeps_the_retry_time_it_was_given() -> None:
    response = error_response(NoBackendAvailable("open", headers=retry_after_headers(20)), "rid")
    assert response.headers["Retry-After"] == "20"


def test_other_errors_get_no_retry_after() -> None:
    assert "Retry-After" not in error_response(BadRequest("no"), "rid").headers
