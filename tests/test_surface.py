"""The operation table: both shapes of every path, 404 and 405 answers, ids that cannot alter the upstream path,
multipart fields read without copying the upload, per-operation body limits."""

from __future__ import annotations

import pytest

from shared.config import load_settings
from shared.errors import BadRequest, MethodNotAllowed, NotFound
from shared.models import GatewayRequest, Operation
from shared.surface import form_field, limit_for, parse, read_form, route, with_model

SETTINGS = load_settings(
    {"GATEWAY_BACKENDS": '[{"name": "b", "endpoint": "http://127.0.0.1:9", "deployments": ["d"]}]'}
)


def _route(method: str, path: str):  # type: ignore[no-untyped-def]
    return route(GatewayRequest(method, path, {}, {}, b"", "r"))


@pytest.mark.parametrize(
    ("method", "path", "operation", "deployment", "object_id", "upstream"),
    [
        ("POST", "/openai/deployments/gpt/chat/completions", Operation.CHAT, "gpt", None, None),
        ("POST", "/openai/deployments/gpt/audio/speech", Operation.SPEECH, "gpt", None, None),
        ("POST", "/v1/images/edits", Operation.IMAGE_EDITS, None, None, None),
        ("POST", "/openai/responses", Operation.RESPONSES_CREATE, None, None, "responses"),
        ("POST", "/openai/v1/responses", Operation.RESPONSES_CREATE, None, None, "v1/responses"),
        ("GET", "/v1/responses/resp_1/input_items", Operation.RESPONSES_INPUT_ITEMS, None, "resp_1", None),
        ("DELETE", "/openai/files/file-1", Operation.FILES_DELETE, None, "file-1", "files/file-1"),
        ("GET", "/v1/files/file-1/content", Operation.FILES_CONTENT, None, "file-1", "v1/files/file-1/content"),
        ("POST", "/openai/batches/batch_1/cancel", Operation.BATCHES_CANCEL, None, "batch_1", "batches/batch_1/cancel"),
        ("GET", "/v1/batches/", Operation.BATCHES_LIST, None, None, "v1/batches"),
    ],
)
def test_every_shape_names_its_operation(
    method: str, path: str, operation: Operation, deployment: str | None, object_id: str | None, upstream: str | None
) -> None:
    found = _route(method, path)
    assert found.operation is operation
    assert found.deployment == deployment
    assert found.object_id == object_id
    if upstream is not None:
        assert found.upstream_path() == upstream


@pytest.mark.parametrize(
    "path", ["/v1/assistants", "/openai/deployments/gpt/responses", "/v1/files/..", "/v1/files/a%2Fb", "/v2/files"]
)
def test_anything_else_is_404_listing_what_is_supported(path: str) -> None:
    with pytest.raises(NotFound) as caught:
        _route("POST", path)
    assert "POST responses" in caught.value.message


def test_a_known_path_with_another_method_is_405_with_allow() -> None:
    with pytest.raises(MethodNotAllowed) as caught:
        _route("PATCH", "/v1/files/file-1")
    assert caught.value.headers["Allow"] == "DELETE, GET"


def test_the_realtime_api_is_404_saying_why() -> None:
    with pytest.raises(NotFound) as caught:
        _route("GET", "/openai/realtime")
    assert caught.value.code == "realtime_not_supported"


def test_a_form_field_is_read_from_a_multipart_body_and_a_file_part_is_not_taken_for_it() -> None:
    body = (
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="model"\r\n\r\nname="model"\r\n'
        b'--B\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper\r\n--B--\r\n'
    )
    assert form_field(body, "multipart/form-data; boundary=B", "model") == "whisper"
    assert form_field(body, "multipart/form-data; boundary=B", "language") is None
    assert form_field(body, "application/json", "model") is None


def test_uploads_have_their_own_body_limits_and_json_the_configured_one() -> None:
    assert limit_for("POST", "/v1/audio/transcriptions", SETTINGS, ceiling=1 << 26) == 25 * 1024 * 1024
    assert limit_for("POST", "/openai/files", SETTINGS, ceiling=1 << 26) == 512 * 1024 * 1024
    assert limit_for("POST", "/v1/chat/completions", SETTINGS, ceiling=1 << 26) == SETTINGS.max_body_bytes
    assert limit_for("POST", "/nowhere", SETTINGS, ceiling=1024) == 1024


def test_the_backends_deployment_name_replaces_model() -> None:
    assert with_model(b'{"model":"gw","input":"x"}', "real") == b'{"model":"real","input":"x"}'


@pytest.mark.parametrize(
    "path",
    [
        "/v1/completions",
        "/openai/deployments/d/images/generations",
        "/v1/audio/speech",
        "/openai/v1/responses",
        "/openai/batches",
    ],
)
@pytest.mark.parametrize(
    "body",
    [
        b'{"model": "d", "prompt": ' + b"[" * 5_000 + b"]" * 5_000 + b"}",  # once a RecursionError: 500
        b'{"model": "d", "prompt": "\\ud800", "input": "\\ud800", "input_file_id": "\\udfff"}',
        b'{"model": "d", "prompt": "hi", "input": "hi", "input_file_id": "f", "n": NaN}',
    ],
    ids=["deep", "lone-surrogate", "nan"],
)
def test_every_json_body_is_refused_with_400_when_nested_too_deep_unencodable_or_nan(path: str, body: bytes) -> None:
    request = GatewayRequest("POST", path, {}, {}, body, "r")
    with pytest.raises(BadRequest) as refused:
        parse(request, route(request), 1 << 20)
    assert refused.value.code == "invalid_json"


_FORM = "multipart/form-data; boundary=B"
_GOOD = (
    b'--B\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper\r\n'
    b'--B\r\nContent-Disposition: form-data; name="file"; filename="\xc3\xa9t\xc3\xa9.wav"\r\n'
    b"Content-Type: audio/wav\r\n\r\nRIFF\r\n--B--\r\n"
)


def _upload(body: bytes, content_type: str = _FORM, path: str = "/v1/audio/transcriptions") -> None:
    request = GatewayRequest("POST", path, {"content-type": content_type}, {}, body, "r")
    parse(request, route(request), 1 << 20)


def test_a_well_formed_upload_is_read_part_by_part_preamble_epilogue_and_empty_values_allowed() -> None:
    parts = read_form(_GOOD, _FORM)
    assert [(p.name, p.size) for p in parts] == [("model", 7), ("file", 4)]
    assert read_form(b"preamble\r\n" + _GOOD + b"epilogue", 'multipart/form-data; boundary="B"') != []
    empty = b'--B\r\nContent-Disposition: form-data; name="language"\r\n\r\n\r\n--B--\r\n'
    assert [(p.name, p.size) for p in read_form(empty, _FORM)] == [("language", 0)]
    _upload(_GOOD)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (_GOOD, "multipart/form-data"),  # no boundary: once forwarded, a backend 500 and a 503 for the caller
        (_GOOD, "multipart/form-data; boundary=other"),
        (_GOOD, "multipart/form-data; boundary=" + "B" * 71),
        (_GOOD.removesuffix(b"--B--\r\n"), _FORM),  # never closed
        (_GOOD[:60], _FORM),  # cut
        (b'--B\r\nContent-Disposition: form-data; name="\x10\xf1"\r\n\r\nx\r\n--B--\r\n', _FORM),  # control character
        (b"--B\r\nContent-Type: text/plain\r\n\r\nx\r\n--B--\r\n", _FORM),  # no Content-Disposition
        (b"--B\r\n\r\nx\r\n--B--\r\n", _FORM),  # no headers at all
        (b"--Bx\r\n", _FORM),
        (b"", _FORM),
    ],
)
def test_a_broken_multipart_body_is_a_400_before_anything_is_forwarded(body: bytes, content_type: str) -> None:
    with pytest.raises(BadRequest) as refused:
        _upload(body, content_type)
    assert refused.value.code == "invalid_multipart"


@pytest.mark.parametrize(
    ("path", "missing"), [("/v1/audio/translations", "file"), ("/v1/images/edits", "image"), ("/v1/files", "file")]
)
def test_an_upload_without_its_file_part_is_a_400_naming_it(path: str, missing: str) -> None:
    body = b'--B\r\nContent-Disposition: form-data; name="model"\r\n\r\nchat\r\n--B--\r\n'
    with pytest.raises(BadRequest) as refused:
        _upload(body, path=path)
    assert refused.value.param == missing
