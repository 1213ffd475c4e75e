"""The boundary to the backends' HTTP: their URLs, the headers we send, and aiohttp's errors mapped to ours.

The proxy and the health probe both reach Azure OpenAI through this module, so a
backend URL is built one way and an aiohttp exception becomes an
`AttemptFailed` in one place.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import aiohttp

from shared.errors import AttemptFailed

# Request headers a caller may pass on to a backend; everything else (keys, cookies, hosts) stays here.
FORWARD_REQUEST_HEADERS = ("content-type", "accept", "openai-beta", "x-ms-useragent", "user-agent")


def deployment_url(endpoint: str, backend_deployment: str, operation: str) -> str:
    """Azure's deployment-scoped URL for an operation (`chat/completions`, `embeddings`, ...)."""
    return f"{endpoint}/openai/deployments/{backend_deployment}/{operation}"


def request_headers(
    client_headers: Mapping[str, str],
    request_id: str,
    credential_headers: Mapping[str, str],
    *extra: Mapping[str, str],
) -> dict[str, str]:
    """What a backend receives: the caller's harmless headers, ours, then the backend's credential last."""
    headers = {k: v for k in FORWARD_REQUEST_HEADERS if (v := client_headers.get(k))}
    for more in extra:
        headers.update(more)
    headers["x-ms-client-request-id"] = request_id
    headers["content-type"] = "application/json"
    headers.update(credential_headers)
    return headers


@contextmanager
def mapped(*, reading: bool = False) -> Iterator[None]:
    """aiohttp and timeout errors as `AttemptFailed`: `timeout`, or `connect_error` / `read_error`."""
    try:
        yield
    except TimeoutError as exc:
        raise AttemptFailed("timeout") from exc
    except aiohttp.ClientError as exc:
        raise AttemptFailed("read_error" if reading else "connect_error") from exc
