"""The browser pages the gateway serves: the chat app at `/chat/` and the operations dashboard at `/dashboard/`.

They are plain HTML, CSS and module scripts in `shared/web/`, with no build
step. A URL is looked up in a fixed manifest: no part of it ever becomes a
filesystem path, so nothing outside the manifest can be read. The pages hold
no secret and add no way around the keys: the chat calls the API with the
subscription key the user gives it, the dashboard the admin API and
`/metrics` with the admin key, exactly as any other client would.

Every answer carries a strict Content-Security-Policy (scripts and styles
only from these files, no inline code, fetches only to this origin), `nosniff`
and `Referrer-Policy: no-referrer`; files are revalidated by ETag on each use,
so a deployment is seen at once and an unchanged file costs a 304.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from shared.errors import GatewayError, MethodNotAllowed, NotFound, error_response
from shared.logs import clip
from shared.models import GatewayRequest, GatewayResponse

if TYPE_CHECKING:
    from shared.gateway import Gateway

WEB_DIR = Path(__file__).resolve().parent / "web"

HTML = "text/html; charset=utf-8"
JS = "text/javascript; charset=utf-8"
CSS = "text/css; charset=utf-8"
SVG = "image/svg+xml"

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
}


@dataclass(frozen=True, slots=True)
class Asset:
    file: str  # a name in WEB_DIR
    content_type: str


_SHARED = {
    "gateway.css": Asset("gateway.css", CSS),
    "common.js": Asset("common.js", JS),
    "icon.svg": Asset("icon.svg", SVG),
}

MANIFEST: dict[str, Asset] = {
    "/chat/": Asset("chat.html", HTML),
    "/chat/chat.js": Asset("chat.js", JS),
    **{f"/chat/{name}": asset for name, asset in _SHARED.items()},
    "/dashboard/": Asset("dashboard.html", HTML),
    "/dashboard/dashboard.js": Asset("dashboard.js", JS),
    "/dashboard/charts.js": Asset("charts.js", JS),
    "/dashboard/prometheus.js": Asset("prometheus.js", JS),
    **{f"/dashboard/{name}": asset for name, asset in _SHARED.items()},
}
# Pages use relative URLs, so each lives at a path ending in a slash.
REDIRECTS = {"/": "/chat/", "/chat": "/chat/", "/dashboard": "/dashboard/"}


@dataclass(frozen=True, slots=True)
class _Loaded:
    body: bytes
    etag: str


_loaded: dict[str, _Loaded] = {}


def _load(asset: Asset) -> _Loaded:
    # Read once per worker, on first use: cold start reads none of them.
    found = _loaded.get(asset.file)
    if found is None:
        body = (WEB_DIR / asset.file).read_bytes()
        found = _Loaded(body, '"' + hashlib.sha256(body).hexdigest()[:20] + '"')
        _loaded[asset.file] = found
    return found


def _headers(request: GatewayRequest, **extra: str) -> dict[str, str]:
    return {**SECURITY_HEADERS, "x-request-id": request.request_id, **extra}


def _not_modified(if_none_match: str, etag: str) -> bool:
    given = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return etag in given or "*" in given


def serve(request: GatewayRequest) -> GatewayResponse:
    """The page or file a path names, a redirect to the page's canonical URL, or a 404 envelope."""
    if request.method not in ("GET", "HEAD"):
        raise MethodNotAllowed(
            f"{clip(request.method, 20)} is not supported on {clip(request.path)}; use GET.", headers={"Allow": "GET"}
        )
    target = REDIRECTS.get(request.path)
    if target is not None:
        return GatewayResponse(302, _headers(request, location=target, **{"cache-control": "no-cache"}))
    asset = MANIFEST.get(request.path)
    if asset is None:
        raise NotFound(f"No such page: {clip(request.path)}", code="page_not_found")
    loaded = _load(asset)
    headers = _headers(request, etag=loaded.etag, **{"cache-control": "no-cache", "content-type": asset.content_type})
    if _not_modified(request.headers.get("if-none-match", ""), loaded.etag):
        return GatewayResponse(304, headers)
    return GatewayResponse(200, headers, loaded.body)


async def handle(gateway: Gateway, request: GatewayRequest) -> GatewayResponse:
    """The `pages` entry: `serve`, with errors in the OpenAI envelope like every other answer of the gateway."""
    try:
        return serve(request)
    except GatewayError as exc:
        return error_response(exc, request.request_id, SECURITY_HEADERS)
