"""Caller bodies are parsed so that nothing in them can fail a later stage: depth, surrogates, NaN."""

from __future__ import annotations

import pytest

from shared import jsonbody
from shared.errors import BadRequest


@pytest.mark.parametrize("depth", [65, 1_000, 100_000])
def test_deep_nesting_is_a_400_not_a_recursion_error(depth: int) -> None:
    for opener, closer in (("[", "]"), ('{"a":', "}")):
        body = ('{"x":' + opener * depth + "1" + closer * depth + "}").encode()
        with pytest.raises(BadRequest) as refused:
            jsonbody.load_object(body)
        assert refused.value.status == 400
        assert refused.value.code == "invalid_json"


def test_nesting_up_to_the_limit_is_accepted() -> None:
    depth = jsonbody.MAX_DEPTH - 1  # the object around it is one level
    body = ('{"x":' + "[" * depth + "1" + "]" * depth + "}").encode()
    assert jsonbody.load_object(body)["x"]


@pytest.mark.parametrize(
    "body",
    [
        rb'{"messages": [{"role": "user", "content": "\ud800"}]}',
        rb'{"messages": [{"role": "user", "content": "ok \udfff ok"}]}',
        rb'{"\ud83d": 1}',  # a key, half a surrogate pair
        rb'{"a": ["x", ["\udc00"]]}',
    ],
)
def test_strings_that_cannot_be_encoded_are_refused(body: bytes) -> None:
    with pytest.raises(BadRequest, match="cannot be encoded"):
        jsonbody.load_object(body)


def test_a_surrogate_pair_escaped_in_json_is_a_valid_character() -> None:
    assert jsonbody.load_object(rb'{"c": "\ud83d\ude00"}')["c"] == "\U0001f600"


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_are_not_json(constant: bytes) -> None:
    with pytest.raises(BadRequest) as refused:
        jsonbody.load_object(b'{"max_tokens": ' + constant + b"}")
    assert refused.value.code == "invalid_json"


@pytest.mark.parametrize("body", [b"[]", b'"x"', b"1", b"null"])
def test_only_an_object_is_a_body(body: bytes) -> None:
    with pytest.raises(BadRequest, match="must be a JSON object"):
        jsonbody.load_object(body)


def test_a_parse_error_message_is_short_whatever_the_body() -> None:
    with pytest.raises(BadRequest) as refused:
        jsonbody.load_object(b"{" + b"x" * 1_000_000)
    assert len(refused.value.message) < 300
