"""The simulator's real HTTP answers validated against Azure OpenAI's published REST specification.

The schemas come from simulator/spec/azure-openai-inference.subset.json,
extracted from Azure/azure-rest-api-specs (the file names each document and
the commit read). OpenAPI 3.0 / Swagger 2.0 are turned into JSON Schema
2020-12 here: `$ref`s into one `$defs` registry per document, `nullable` /
`x-nullable` into a null type, and `discriminator` into a keyword that
validates an object against the subtype its property names, so a
`response.output_text.delta` event is checked as that event, not only as
"some event".

Where the service (and so the simulator) sends what the document does not
allow, the test says so in `SERVICE_DEVIATIONS` instead of loosening the
document.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest
from jsonschema import Draft202012Validator, ValidationError
from referencing.exceptions import Unresolvable

from simulator import SimulatorConfig, running

SPEC = Path(__file__).resolve().parent.parent / "simulator" / "spec" / "azure-openai-inference.subset.json"
VERSION = "2024-10-21"
PREVIEW = "2025-03-01-preview"
CHAT = "gpt-4o-mini"
DEPLOYMENTS = (CHAT, "text-embedding-3-small", "dall-e-3", "whisper", "tts")

# What Azure OpenAI is seen to send that its own document does not allow; each entry is applied on purpose.
SERVICE_DEVIATIONS = {
    # The stable document types error.param and error.type as strings; the service sends null for both
    # (param for most errors, type for 429 and content filter refusals), as the OpenAI SDK expects.
    ("stable", "error"): ("param", "type"),
}


def _convert(node: Any, refs: str) -> Any:
    """OpenAPI 3.0 / Swagger 2.0 schema -> JSON Schema 2020-12 with refs into `#/$defs`."""
    if isinstance(node, list):
        return [_convert(item, refs) for item in node]
    if not isinstance(node, dict):
        return node
    nullable = node.get("nullable") is True or node.get("x-nullable") is True
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("nullable", "x-nullable"):
            continue
        if key == "$ref":
            out[key] = "#/$defs/" + value.removeprefix(refs)
        elif key == "discriminator":
            out[key] = {
                "propertyName": value["propertyName"],
                "mapping": {k: v.removeprefix(refs) for k, v in value.get("mapping", {}).items()},
            }
        elif key == "properties":
            out[key] = {name: _convert(schema, refs) for name, schema in value.items()}
        else:
            out[key] = _convert(value, refs)
    # OpenAPI's nullable lets null through whatever else the schema says (allOf and enum included).
    return {"anyOf": [out, {"type": "null"}]} if nullable else out


def _discriminator(validator: Any, value: Mapping[str, Any], instance: Any, schema: Mapping[str, Any]) -> Iterator[Any]:
    """Validate an object against the subtype its discriminating property names (OpenAPI's `discriminator`)."""
    if not isinstance(instance, dict):
        return
    target = value["mapping"].get(instance.get(value["propertyName"]))
    if target is None:
        return
    key = (id(instance), target)
    # A subtype refers back to its base (allOf), whose discriminator names the same subtype: check it once.
    if key in _ACTIVE:
        return
    _ACTIVE.add(key)
    try:
        errors = list(validator.descend(instance, {"$ref": "#/$defs/" + target}))
    except Unresolvable:
        errors = [ValidationError(f"{target} is named by the discriminator but was not extracted from the document")]
    finally:
        _ACTIVE.discard(key)
    yield from errors


_ACTIVE: set[tuple[int, str]] = set()
_Validator = jsonschema.validators.extend(Draft202012Validator, {"discriminator": _discriminator})


def _registry() -> dict[str, dict[str, Any]]:
    doc = json.loads(SPEC.read_text())
    documents = doc["source"]["documents"]
    registry: dict[str, dict[str, Any]] = {}
    for name, schemas in doc["schemas"].items():
        refs = documents[name]["refs"]
        defs = {key: _convert(schema, refs) for key, schema in schemas.items()}
        for (document, definition), fields in SERVICE_DEVIATIONS.items():
            if document == name:
                for field in fields:
                    prop = defs[definition]["properties"][field]
                    prop["type"] = [prop["type"], "null"]
        registry[name] = defs
    return registry


REGISTRY = _registry()


def check(document: str, definition: str, instance: object) -> None:
    """Raise if `instance` does not validate against `definition` of `document` (e.g. "stable", "error")."""
    defs = REGISTRY[document]
    assert definition in defs, f"{definition} is not in the extracted {document} schemas"
    _Validator({"$ref": f"#/$defs/{definition}", "$defs": defs}).validate(instance)


def check_event(event: Mapping[str, Any]) -> None:
    """A Responses stream event, as the exact event type it claims to be."""
    mapping = REGISTRY["v1"]["OpenAI.ResponseStreamEvent"]["discriminator"]["mapping"]
    assert event["type"] in mapping, f"{event['type']} is not an event type of the specification"
    check("v1", "OpenAI.ResponseStreamEvent", event)


# --- the extracted document itself ---


def test_the_subset_names_its_source_and_every_reference_resolves() -> None:
    doc = json.loads(SPEC.read_text())
    for name, source in doc["source"]["documents"].items():
        assert len(source["commit"]) == 40
        assert source["path"].startswith("specification/")
        assert doc["schemas"][name]
    for name, defs in REGISTRY.items():
        text = json.dumps(defs)
        for ref in {part.split('"')[0] for part in text.split('"$ref": "#/$defs/')[1:]}:
            assert ref in defs, f"{name}: {ref} is referenced but missing"
        for schema in defs.values():
            Draft202012Validator.check_schema(schema)


def test_a_wrong_answer_is_caught() -> None:
    """The checks are not vacuous: a missing field, a wrong enum and a wrong event shape all fail."""
    with pytest.raises(ValidationError):
        check("stable", "createChatCompletionResponse", {"id": "x", "object": "chat.completion", "created": 1})
    with pytest.raises(ValidationError):
        check("preview", "Batch", {"id": "b", "object": "batch", "input_file_id": "f", "status": "done"})
    with pytest.raises(ValidationError):
        check_event({"type": "response.output_text.delta", "sequence_number": 1, "item_id": "m", "delta": "x"})


# --- against a running simulator ---


@pytest.fixture
async def sim() -> AsyncIterator[Any]:
    config = SimulatorConfig(deployments=DEPLOYMENTS, batch_step_seconds=0.0, stream_filter_results=True)
    async with running(config) as started:
        yield started


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def chat_url(sim: Any, operation: str = "chat/completions", deployment: str = CHAT) -> str:
    return f"{sim.url}/openai/deployments/{deployment}/{operation}?api-version={VERSION}"


async def post(http: aiohttp.ClientSession, url: str, body: object, status: int = 200) -> Any:
    async with http.post(url, json=body) as resp:
        assert resp.status == status, await resp.text()
        return await resp.json()


async def sse(http: aiohttp.ClientSession, url: str, body: object) -> list[tuple[str | None, Any]]:
    """(event name, data) of each server-sent event, [DONE] excluded."""
    async with http.post(url, json=body) as resp:
        assert resp.status == 200
        text = await resp.text()
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        if lines["data"] != "[DONE]":
            events.append((lines.get("event"), json.loads(lines["data"])))
    return events


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
            "required": ["city", "days"],
        },
    },
}
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "mood": {"type": "string", "enum": ["happy", "sad"]},
        "address": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["name", "age", "mood", "address", "tags"],
    "additionalProperties": False,
}
ASK = [{"role": "user", "content": "Hello there"}]


async def test_chat_completions_plain_tool_calls_and_json_schema_match_the_stable_schema(
    sim: Any, http: aiohttp.ClientSession
) -> None:
    plain = await post(http, chat_url(sim), {"messages": ASK})
    check("stable", "createChatCompletionResponse", plain)
    tools = await post(http, chat_url(sim), {"messages": ASK, "tools": [WEATHER]})
    check("stable", "createChatCompletionResponse", tools)
    assert tools["choices"][0]["finish_reason"] == "tool_calls"
    arguments = json.loads(tools["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"])
    jsonschema.validate(arguments, WEATHER["function"]["parameters"])  # type: ignore[index]
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
    structured = await post(http, chat_url(sim), {"messages": ASK, "response_format": fmt})
    check("stable", "createChatCompletionResponse", structured)
    jsonschema.validate(json.loads(structured["choices"][0]["message"]["content"]), PERSON)


async def test_stream_chunks_match_the_stream_schema_after_azures_prompt_filter_chunk(
    sim: Any, http: aiohttp.ClientSession
) -> None:
    for body in (
        {"messages": ASK, "stream": True, "stream_options": {"include_usage": True}},
        {"messages": ASK, "stream": True, "tools": [WEATHER]},
        {"messages": ASK, "stream": True, "n": 2, "max_tokens": 3},
    ):
        events = await sse(http, chat_url(sim), body)
        _, first = events[0]
        # Azure opens with a chunk that has no choices and empty id/model/object, carrying the prompt's
        # filter results: the one chunk the document's stream schema (object enum) does not describe.
        assert first["choices"] == []
        assert first["object"] == ""
        check("stable", "promptFilterResults", first["prompt_filter_results"])
        for _, chunk in events[1:]:
            check("stable", "createChatCompletionStreamResponse", chunk)
            for choice in chunk["choices"]:
                if choice.get("content_filter_results"):
                    check("stable", "contentFilterChoiceResults", choice["content_filter_results"])


async def test_legacy_completions_match_the_stable_schema(sim: Any, http: aiohttp.ClientSession) -> None:
    plain = await post(http, chat_url(sim, "completions"), {"prompt": ["One", "Two"], "n": 2, "max_tokens": 3})
    check("stable", "createCompletionResponse", plain)
    assert len(plain["choices"]) == 4
    events = await sse(http, chat_url(sim, "completions"), {"prompt": "One", "max_tokens": 3, "stream": True})
    # The document gives streamed chunks the same schema, whose finish_reason is not nullable; the service sends
    # null until the last chunk, so each chunk before it is checked with the last chunk's finish_reason in its place.
    *running, (_, last) = events
    check("stable", "createCompletionResponse", last)
    for _, chunk in running:
        assert chunk["choices"][0]["finish_reason"] is None
        chunk["choices"][0]["finish_reason"] = last["choices"][0]["finish_reason"]
        check("stable", "createCompletionResponse", chunk)


async def test_embeddings_match_the_stable_schema(sim: Any, http: aiohttp.ClientSession) -> None:
    body = await post(http, chat_url(sim, "embeddings", "text-embedding-3-small"), {"input": ["a", "b"]})
    check("stable", "embeddings_create.200", body)


async def test_error_bodies_match_the_stable_error_schema(sim: Any, http: aiohttp.ClientSession) -> None:
    refused = await post(http, chat_url(sim), {"messages": [{"role": "user", "content": "[[content_filter]]"}]}, 400)
    check("stable", "errorResponse", refused)
    check("stable", "innerErrorCode", refused["error"]["innererror"]["code"])
    check("stable", "contentFilterPromptResults", refused["error"]["innererror"]["content_filter_result"])
    check("stable", "errorResponse", await post(http, chat_url(sim, deployment="nope"), {"messages": ASK}, 404))
    sim.set_faults(throttle_rate=1.0, count=1)
    check("stable", "errorResponse", await post(http, chat_url(sim), {"messages": ASK}, 429))


async def test_responses_objects_items_and_every_stream_event_match_the_v1_schemas(
    sim: Any, http: aiohttp.ClientSession
) -> None:
    url = f"{sim.url}/openai/v1/responses"
    made = await post(http, url, {"model": CHAT, "input": "Hi", "reasoning": {"effort": "low"}})
    check("v1", "AzureResponse", made)
    follow = await post(http, url, {"model": CHAT, "input": "More", "previous_response_id": made["id"]})
    check("v1", "AzureResponse", follow)
    tool = {"type": "function", "name": "get_weather", "parameters": WEATHER["function"]["parameters"]}  # type: ignore[index]
    called = await post(http, url, {"model": CHAT, "input": "Weather?", "tools": [tool]})
    check("v1", "AzureResponse", called)
    assert called["output"][0]["type"] == "function_call"
    fmt = {"type": "json_schema", "name": "person", "schema": PERSON, "strict": True}
    shaped = await post(http, url, {"model": CHAT, "input": "Who?", "text": {"format": fmt}})
    check("v1", "AzureResponse", shaped)
    jsonschema.validate(json.loads(shaped["output"][0]["content"][0]["text"]), PERSON)
    queued = await post(http, url, {"model": CHAT, "input": "Later", "background": True})
    check("v1", "AzureResponse", queued)
    async with http.get(f"{url}/{made['id']}") as resp:
        check("v1", "AzureResponse", await resp.json())
    async with http.get(f"{url}/{made['id']}/input_items") as resp:
        check("v1", "OpenAI.ResponseItemList", await resp.json())
    for body in (
        {"model": CHAT, "input": "Stream", "stream": True},
        {"model": CHAT, "input": "S", "stream": True, "tools": [tool]},
    ):
        events = await sse(http, url, body)
        assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
        for name, data in events:
            assert name == data["type"]
            check_event(data)


async def test_files_match_the_v1_schemas_and_batches_the_preview_schema(sim: Any, http: aiohttp.ClientSession) -> None:
    line = {"custom_id": "1", "method": "POST", "url": "/chat/completions", "body": {"model": CHAT, "messages": ASK}}
    form = aiohttp.FormData()
    form.add_field("purpose", "batch")
    form.add_field("file", (json.dumps(line) + "\n").encode(), filename="in.jsonl")
    async with http.post(f"{sim.url}/openai/files?api-version={PREVIEW}", data=form) as resp:
        uploaded = await resp.json()
    check("v1", "AzureOpenAIFile", uploaded)
    batch_body = {"input_file_id": uploaded["id"], "endpoint": "/chat/completions", "completion_window": "24h"}
    batch = await post(http, f"{sim.url}/openai/batches?api-version={PREVIEW}", batch_body)
    check("preview", "Batch", batch)
    async with http.get(f"{sim.url}/openai/batches/{batch['id']}?api-version={PREVIEW}") as resp:
        done = await resp.json()
    check("preview", "Batch", done)
    assert done["status"] == "completed"
    async with http.get(f"{sim.url}/openai/batches?api-version={PREVIEW}") as resp:
        check("preview", "ListBatches.200", await resp.json())
    async with http.get(f"{sim.url}/openai/v1/files") as resp:
        check("v1", "AzureListFilesResponse", await resp.json())
    async with http.get(f"{sim.url}/openai/v1/files/{done['output_file_id']}/content") as resp:
        [result] = [json.loads(x) for x in (await resp.text()).splitlines()]
    check("stable", "createChatCompletionResponse", result["response"]["body"])


async def test_images_and_transcriptions_match_the_stable_schemas(sim: Any, http: aiohttp.ClientSession) -> None:
    for fmt in ("b64_json", "url"):
        images = await post(
            http, chat_url(sim, "images/generations", "dall-e-3"), {"prompt": "a cat", "response_format": fmt}
        )
        check("stable", "generateImagesResponse", images)
    for fmt, definition in (("json", "audioResponse"), ("verbose_json", "audioVerboseResponse")):
        form = aiohttp.FormData()
        form.add_field("file", b"RIFF....WAVE", filename="a.wav")
        form.add_field("response_format", fmt)
        async with http.post(chat_url(sim, "audio/transcriptions", "whisper"), data=form) as resp:
            check("stable", definition, await resp.json())
