"""`/openapi.json` describes every route the gateway serves: the list is derived from the code, not copied.

The forwarded operations come from `shared.surface.SPECS`, the HTTP functions
from `function_app.app` (read as the Functions host reads it), the pages from
`shared.pages.MANIFEST`; a route added to any of them without a description
in `shared.openapi` fails here. That every described route is really served
is proven over HTTP by tests/test_fuzz.py.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from jsonschema import Draft202012Validator

import function_app
from local.host import index
from shared import api, surface
from shared.models import GatewayRequest
from shared.openapi import AZURE_ACCOUNT, AZURE_SCOPED, FORMS, JSON_BODIES, SERVER_ERRORS, V1_PREFIXES, description
from shared.pages import MANIFEST, REDIRECTS
from shared.surface import SPECS, Body, Relay

SPEC = description()
PATHS: dict[str, dict[str, Any]] = SPEC["paths"]
DESCRIBED = sorted((method.upper(), path) for path, item in PATHS.items() for method in item)


def _concrete(template: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: {"deployment": "chat", "id": "resp_1"}.get(m.group(1), "x1"), template)


def _shapes(spec: surface.Spec) -> list[str]:
    azure = AZURE_SCOPED if spec.deployment_scoped else AZURE_ACCOUNT
    return [f"{prefix}/{spec.path}" for prefix in (azure, *V1_PREFIXES)]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.operation.value)
def test_every_forwarded_operation_is_described_in_every_path_shape(spec: surface.Spec) -> None:
    for path in _shapes(spec):
        operation = PATHS.get(path, {}).get(spec.method.lower())
        assert operation is not None, f"{spec.method} {path} is served but not described"
        media = set(operation.get("requestBody", {}).get("content", {}))
        expected = {Body.JSON: {"application/json"}, Body.MULTIPART: {"multipart/form-data"}, Body.NONE: set()}
        assert media == expected[spec.body], path
        ok = operation["responses"]["200"]["content"]
        if spec.relay is Relay.BINARY:
            assert set(ok) == {"application/octet-stream"}
        elif spec.relay is not None:
            assert "text/event-stream" in ok
        # The path the description names is the one the gateway routes to this operation.
        routed = surface.route(GatewayRequest(spec.method, _concrete(path), {}, {}, b"", "r"))
        assert routed.operation is spec.operation


def test_every_body_an_operation_takes_has_a_schema() -> None:
    assert {s.operation for s in SPECS if s.body is Body.JSON} == set(JSON_BODIES)
    assert {s.operation for s in SPECS if s.body is Body.MULTIPART} == set(FORMS)
    for schema in (*JSON_BODIES.values(), *FORMS.values()):
        Draft202012Validator.check_schema(schema)


def test_the_model_list_is_described_in_every_shape_it_is_served() -> None:
    for path in [p for p in PATHS if "/models" in p]:
        assert api.models_route(GatewayRequest("GET", _concrete(path), {}, {}, b"", "r")) is not None, path
    for prefix in ("/openai/v1", "/openai", "/v1"):
        assert f"{prefix}/models" in PATHS
        assert f"{prefix}/models/{{model}}" in PATHS


def test_every_page_and_redirect_is_described() -> None:
    for path in (*MANIFEST, *REDIRECTS):
        assert "get" in PATHS.get(path, {}), path


def test_every_http_function_serves_a_described_route_with_the_methods_it_takes() -> None:
    functions, _ = index(function_app.app, "")

    def served_by(path: str) -> Any:
        return next(f for f in functions if f.route.match(path))

    for function in functions:
        mine = [(m, p) for m, p in DESCRIBED if served_by(_concrete(p)) is function]
        assert mine, f"function {function.name} (/{function.template}) serves routes that are not described"
        for method, path in mine:
            assert method in function.methods, (function.name, method, path)
    # Only `/` reaches the catch-all on purpose; everything else it answers is a 404.
    assert [p for _, p in DESCRIBED if served_by(_concrete(p)).name == "not_found"] == ["/"]


def test_every_error_response_is_the_envelope_and_no_other_5xx_is_documented() -> None:
    for method, path in DESCRIBED:
        for status, response in PATHS[path][method.lower()]["responses"].items():
            if int(status) >= 500:
                assert status in SERVER_ERRORS, (method, path, status)
            if int(status) >= 400:
                assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    error = SPEC["components"]["schemas"]["Error"]["properties"]["error"]
    assert error["required"] == ["message", "type", "code", "param"]


def test_uploads_are_multipart_with_their_file_part_binary_and_the_model_required_in_the_openai_shape() -> None:
    edits = PATHS["/v1/images/edits"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert edits["schema"]["properties"]["image"]["format"] == "binary"
    assert "model" in edits["schema"]["required"]
    azure = PATHS["/openai/deployments/{deployment}/audio/transcriptions"]["post"]["requestBody"]
    assert "model" not in azure["content"]["multipart/form-data"]["schema"]["required"]
    files = PATHS["/openai/files"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert set(files["required"]) == {"file", "purpose"}
