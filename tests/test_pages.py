"""The browser pages as HTTP sees them (`shared/pages.py`): security headers, types, caching, nothing off the manifest.

No browser here: these are the properties a browser relies on. `tests/test_web.py` drives the pages in Chromium.
"""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Callable
from html.parser import HTMLParser
from typing import Any

import pytest

from local.run import banner
from shared import pages
from shared.gateway import Gateway
from shared.telemetry.names import METRICS
from shared.telemetry.prometheus import prometheus_name
from tests.fixtures.servers import GatewayServer, settings_for

KEY = "test-subscription-key-pages-0123456789"
ADMIN = "test-admin-key"


@pytest.fixture
def gw(gateway_server: Callable[..., GatewayServer]) -> GatewayServer:
    backends: list[dict[str, Any]] = [{"name": "a", "endpoint": "http://127.0.0.1:9", "deployments": ["chat"]}]
    settings = settings_for(backends, GATEWAY_DEMO_KEY=KEY, GATEWAY_ADMIN_KEY=ADMIN, GATEWAY_METRICS_ENDPOINT="true")
    return gateway_server(lambda: Gateway(settings))


def get(
    gw: GatewayServer, path: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    """A request with the path sent exactly as given: no client-side normalisation of `..` or `%2e`."""
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def test_root_and_bare_page_paths_redirect_to_the_pages(gw: GatewayServer) -> None:
    for path, target in (("/", "/chat/"), ("/chat", "/chat/"), ("/dashboard", "/dashboard/")):
        status, headers, _ = get(gw, path)
        assert (status, headers["location"]) == (302, target)


@pytest.mark.parametrize("path", sorted(pages.MANIFEST))
def test_every_file_has_its_type_and_the_security_headers(gw: GatewayServer, path: str) -> None:
    status, headers, body = get(gw, path)
    assert status == 200
    assert headers["content-type"] == pages.MANIFEST[path].content_type
    assert body == (pages.WEB_DIR / pages.MANIFEST[path].file).read_bytes()
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["cache-control"] == "no-cache"
    csp = {d.split()[0]: d.split()[1:] for d in headers["content-security-policy"].split("; ")}
    assert csp["default-src"] == ["'self'"]
    assert csp["script-src"] == ["'self'"]  # no 'unsafe-inline', no 'unsafe-eval', no other host
    assert csp["style-src"] == ["'self'"]
    assert csp["connect-src"] == ["'self'"]
    assert csp["frame-ancestors"] == ["'none'"]
    assert csp["object-src"] == ["'none'"]


def test_an_unchanged_file_answers_304_to_its_etag(gw: GatewayServer) -> None:
    _, headers, _ = get(gw, "/chat/chat.js")
    status, again, body = get(gw, "/chat/chat.js", {"if-none-match": headers["etag"]})
    assert (status, body) == (304, b"")
    assert again["etag"] == headers["etag"]
    assert get(gw, "/chat/chat.js", {"if-none-match": '"something-else"'})[0] == 200
    status, _, body = get(gw, "/chat/", method="HEAD")
    assert (status, body) == (200, b"")


@pytest.mark.parametrize(
    "path",
    [
        "/chat/../function_app.py",
        "/chat/%2e%2e/function_app.py",
        "/chat/..%2ffunction_app.py",
        "/dashboard/..%2f..%2fshared%2fconfig.py",
        "/chat/chat.html",  # a real file, but not under a URL in the manifest
        "/chat//etc/passwd",
        "/chat/%2fetc%2fpasswd",
        "/dashboard/gateway.css/",
    ],
)
def test_nothing_outside_the_manifest_is_served(gw: GatewayServer, path: str) -> None:
    status, headers, body = get(gw, path)
    assert status == 404
    assert headers["content-type"] == "application/json"
    assert set(json.loads(body)["error"]) == {"message", "type", "code", "param"}
    assert b"import" not in body
    assert b"root:" not in body


def test_the_pages_open_no_way_around_the_keys(gw: GatewayServer) -> None:
    """The dashboard's data stays behind the admin key and the chat's behind a subscription key."""
    for path in ("/gateway/admin/backends", "/gateway/admin/subscriptions", "/gateway/admin/usage", "/metrics"):
        assert get(gw, path)[0] == 401
        assert get(gw, path, {"referer": gw.url + "/dashboard/", "origin": gw.url})[0] == 401
    for path in ("/v1/models", "/usage"):
        assert get(gw, path)[0] == 401
    for path in ("/chat/", "/dashboard/"):
        status, headers, body = get(gw, path, method="POST")
        assert (status, headers["allow"]) == (405, "GET"), path
        assert json.loads(body)["error"]["code"]


class _Page(HTMLParser):
    """What a CSP-strict, accessible page must get right, gathered from its markup."""

    def __init__(self) -> None:
        super().__init__()
        self.inline_scripts = 0
        self.style_elements = 0
        self.inline_attributes: list[str] = []
        self.controls: list[dict[str, str | None]] = []
        self.label_for: set[str] = set()
        self.lang: str | None = None
        self.h1 = 0
        self._in_script = False
        self._button: dict[str, str | None] | None = None
        self.buttons: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.inline_attributes += [name for name in attributes if name == "style" or name.startswith("on")]
        if tag == "html":
            self.lang = attributes.get("lang")
        if tag == "h1":
            self.h1 += 1
        if tag == "script":
            self._in_script = True
            if "src" not in attributes:
                self.inline_scripts += 1
        if tag == "style":
            self.style_elements += 1
        if tag == "label" and attributes.get("for"):
            self.label_for.add(str(attributes["for"]))
        if tag in ("input", "select", "textarea"):
            self.controls.append(attributes)
        if tag == "button":
            self._button = attributes
            self.buttons.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False
        if tag == "button":
            self._button = None

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts += 1
        if self._button is not None:
            self.buttons[-1] += data.strip()


@pytest.mark.parametrize("path", ["/chat/", "/dashboard/"])
def test_pages_have_no_inline_code_and_label_every_control(gw: GatewayServer, path: str) -> None:
    page = _Page()
    page.feed(get(gw, path)[2].decode())
    assert page.inline_scripts == 0
    assert page.style_elements == 0
    assert page.inline_attributes == []  # style="" and on*="" would be blocked by the CSP
    assert page.lang == "en"
    assert page.h1 == 1
    assert page.controls
    for control in page.controls:
        assert control.get("id") in page.label_for, f"control without a label: {control}"
    assert page.buttons
    assert all(page.buttons), "every button says what it does"


def test_scripts_never_parse_strings_as_html() -> None:
    for name in {a.file for a in pages.MANIFEST.values() if a.content_type == pages.JS}:
        source = (pages.WEB_DIR / name).read_text()
        assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function", source), (
            name
        )
        assert 'setAttribute("style"' not in source, name


def test_make_run_prints_the_page_urls_with_the_keys_in_the_fragment() -> None:
    text = banner("http://127.0.0.1:7071", "gw-demo-key", "admin-key", simulated=True)
    assert "http://127.0.0.1:7071/chat/#key=gw-demo-key" in text
    assert "http://127.0.0.1:7071/dashboard/#key=admin-key" in text


def test_the_dashboard_reads_metric_and_label_names_the_gateway_exports() -> None:
    """A renamed metric would leave the dashboard's charts silently empty: its names are checked here."""
    exported = {prometheus_name(spec) for spec in METRICS}
    exported |= {f"{name}_{suffix}" for name in exported for suffix in ("sum", "count", "bucket")}
    labels = {re.sub(r"[^A-Za-z0-9_]", "_", a) for spec in METRICS for a in spec.attributes}
    source = (pages.WEB_DIR / "dashboard.js").read_text()
    read_metrics = set(re.findall(r'"((?:gateway|gen_ai)_[a-z_]+_(?:total|sum))"', source))
    read_labels = set(re.findall(r"\b(?:l|labels)\.((?:gateway|gen_ai)_[a-z_]+)", source))
    read_labels |= set(re.findall(r'"((?:gateway|gen_ai)_[a-z_]+)"\)', source)) - read_metrics
    assert read_metrics
    assert read_metrics <= exported
    assert read_labels
    assert read_labels <= labels
