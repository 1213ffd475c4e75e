"""The simulator's operations beyond plain chat and embeddings, driven by the official openai SDK over real HTTP.

Both client shapes are used: `AzureOpenAI` (deployment-scoped paths and
`/openai/responses?api-version=`) and `OpenAI(base_url=.../openai/v1/)`.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import urllib.error
import urllib.request
import wave
from collections.abc import Iterator

import aiohttp
import jsonschema
import openai
import pytest
from openai import AzureOpenAI, OpenAI
from pydantic import BaseModel

from simulator import SimulatorConfig, SimulatorThread, running
from simulator.structured import instance

API_VERSION = "2025-03-01-preview"
CHAT = "gpt-4o-mini"
DEPLOYMENTS = (CHAT, "dall-e-3", "whisper", "tts")
WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
    "required": ["city", "unit"],
}
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_PARAMETERS}}


class FakeClock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture(scope="module")
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="module")
def sim(clock: FakeClock) -> Iterator[SimulatorThread]:
    config = SimulatorConfig(name="api", deployments=DEPLOYMENTS, max_upload_bytes=64 * 1024)
    with SimulatorThread(config, clock=clock) as started:
        yield started


@pytest.fixture(scope="module")
def azure(sim: SimulatorThread) -> Iterator[AzureOpenAI]:
    client = AzureOpenAI(azure_endpoint=sim.url, api_key="x", api_version=API_VERSION, max_retries=0, timeout=5)
    yield client
    client.close()


@pytest.fixture(scope="module")
def v1(sim: SimulatorThread) -> Iterator[OpenAI]:
    client = OpenAI(base_url=f"{sim.url}/openai/v1/", api_key="x", max_retries=0, timeout=5)
    yield client
    client.close()


def ask(text: str = "Hello") -> list[openai.types.chat.ChatCompletionMessageParam]:
    return [{"role": "user", "content": text}]


# --- structured output: the instance builder ---


def test_minimal_instances_validate_against_nested_refs_enums_bounds_and_nullables() -> None:
    schema = {
        "type": "object",
        "properties": {
            "id": {"type": "integer", "minimum": 5},
            "score": {"type": "number", "exclusiveMinimum": 0},
            "kind": {"enum": ["a", "b"]},
            "fixed": {"const": 7},
            "when": {"type": "string", "format": "date-time"},
            "code": {"type": "string", "minLength": 12, "maxLength": 12},
            "owner": {"anyOf": [{"$ref": "#/$defs/Person"}, {"type": "null"}]},
            "people": {"type": "array", "items": {"$ref": "#/$defs/Person"}, "minItems": 2},
            "flag": {"type": ["boolean", "null"]},
            "mixed": {
                "allOf": [
                    {"$ref": "#/$defs/Person"},
                    {"properties": {"extra": {"type": "string"}}, "required": ["extra"]},
                ]
            },
        },
        "required": ["id", "score", "kind", "fixed", "when", "code", "owner", "people", "flag", "mixed"],
        "additionalProperties": False,
        "$defs": {
            "Person": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "age": {"type": "integer", "maximum": 0}},
                "required": ["name", "age"],
            }
        },
    }
    made = instance(schema)
    jsonschema.validate(made, schema, format_checker=jsonschema.FormatChecker())
    assert made["id"] == 5
    assert len(made["people"]) == 2
    assert instance(schema, seed=3)["owner"]["name"] != made["owner"]["name"]


# --- chat completions ---


class Person(BaseModel):
    name: str
    age: int
    nickname: str | None
    friends: list[str]


def test_chat_completions_parse_fills_a_pydantic_model_on_both_client_shapes(azure: AzureOpenAI, v1: OpenAI) -> None:
    for client in (azure, v1):
        parsed = client.chat.completions.parse(model=CHAT, messages=ask("Who?"), response_format=Person)
        choice = parsed.choices[0]
        assert choice.finish_reason == "stop"
        assert isinstance(choice.message.parsed, Person)
        assert choice.message.parsed.friends


def test_json_object_answers_json(azure: AzureOpenAI) -> None:
    reply = azure.chat.completions.create(model=CHAT, messages=ask(), response_format={"type": "json_object"})
    assert isinstance(json.loads(reply.choices[0].message.content or ""), dict)


def test_tool_call_then_tool_result_then_answer(azure: AzureOpenAI) -> None:
    first = azure.chat.completions.create(model=CHAT, messages=ask("Weather in Oslo?"), tools=[WEATHER])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert call.type == "function"
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER_PARAMETERS)
    assert first.usage is not None
    assert first.usage.completion_tokens > 0
    follow: list[openai.types.chat.ChatCompletionMessageParam] = [
        *ask("Weather in Oslo?"),
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},  # type: ignore[list-item]
        {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 3}'},
    ]
    second = azure.chat.completions.create(model=CHAT, messages=follow, tools=[WEATHER])
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content
    none = azure.chat.completions.create(model=CHAT, messages=ask(), tools=[WEATHER], tool_choice="none")
    assert none.choices[0].message.tool_calls is None


def test_streamed_tool_calls_assemble_into_the_same_call(v1: OpenAI) -> None:
    chunks = list(v1.chat.completions.create(model=CHAT, messages=ask("Weather?"), tools=[WEATHER], stream=True))
    first = chunks[0].choices[0].delta
    assert first.role == "assistant"
    [opening] = first.tool_calls or []
    assert opening.index == 0
    assert opening.id
    assert opening.type == "function"
    assert opening.function is not None
    assert opening.function.name == "get_weather"
    arguments = "".join(
        (c.choices[0].delta.tool_calls or [])[0].function.arguments or ""  # type: ignore[union-attr]
        for c in chunks[1:]
        if c.choices and c.choices[0].delta.tool_calls
    )
    jsonschema.validate(json.loads(arguments), WEATHER_PARAMETERS)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    with v1.chat.completions.stream(model=CHAT, messages=ask("Weather?"), tools=[WEATHER]) as stream:
        final = stream.get_final_completion()
    [call] = final.choices[0].message.tool_calls or []
    assert call.function.arguments == arguments


def test_non_streamed_answers_carry_azures_content_filter_results(azure: AzureOpenAI) -> None:
    raw = azure.chat.completions.with_raw_response.create(model=CHAT, messages=ask())
    body = json.loads(raw.text)
    [prompt] = body["prompt_filter_results"]
    assert prompt["content_filter_results"]["jailbreak"] == {"filtered": False, "detected": False}
    assert body["choices"][0]["content_filter_results"]["violence"] == {"filtered": False, "severity": "safe"}
    assert body["choices"][0]["message"]["refusal"] is None


async def test_stream_opens_with_prompt_filter_results_when_configured() -> None:
    async with running(SimulatorConfig(stream_filter_results=True)) as sim:
        client = openai.AsyncAzureOpenAI(azure_endpoint=sim.url, api_key="x", api_version=API_VERSION, max_retries=0)
        stream = await client.chat.completions.create(model=CHAT, messages=ask(), max_tokens=3, stream=True)
        chunks = [c async for c in stream]
        await client.close()
    assert chunks[0].choices == []
    assert chunks[0].prompt_filter_results[0]["prompt_index"] == 0  # type: ignore[attr-defined]
    assert len("".join(c.choices[0].delta.content or "" for c in chunks if c.choices).split()) == 3


def test_content_filter_refusal_has_azures_inner_error(azure: AzureOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        azure.chat.completions.create(model=CHAT, messages=ask("[[content_filter]] now"))
    body = refused.value.body
    assert isinstance(body, dict)
    assert body["code"] == "content_filter"
    assert body["param"] == "prompt"
    assert body["status"] == 400
    inner = body["innererror"]
    assert inner["code"] == "ResponsibleAIPolicyViolation"
    assert inner["content_filter_result"]["violence"] == {"filtered": True, "severity": "high"}
    assert inner["content_filter_result"]["jailbreak"] == {"filtered": False, "detected": False}


def test_throttled_message_names_the_operation_and_api_version(sim: SimulatorThread, azure: AzureOpenAI) -> None:
    sim.set_faults(throttle_rate=1.0, retry_after=3, count=1)
    with pytest.raises(openai.RateLimitError) as throttled:
        azure.chat.completions.create(model=CHAT, messages=ask())
    message = str(throttled.value.message)
    assert f"ChatCompletions_Create Operation under Azure OpenAI API version {API_VERSION}" in message
    assert "Please retry after 3 seconds" in message
    assert throttled.value.response.headers["retry-after"] == "3"


async def test_v1_routes_take_the_deployment_from_the_body_and_check_api_version(sim: SimulatorThread) -> None:
    url = f"{sim.url}/openai/v1/chat/completions"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json={"model": CHAT, "messages": ask()}) as resp:
            assert resp.status == 200
            assert resp.headers["apim-request-id"]
            assert resp.headers["x-ms-deployment-name"] == CHAT
        async with http.post(url + "?api-version=preview", json={"model": CHAT, "messages": ask()}) as resp:
            assert resp.status == 200
        async with http.post(url + "?api-version=2024-10-21", json={"model": CHAT, "messages": ask()}) as resp:
            assert resp.status == 400
        async with http.post(url, json={"messages": ask()}) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["param"] == "model"
        async with http.post(url, json={"model": "gpt-99", "messages": ask()}) as resp:
            assert resp.status == 404
            assert (await resp.json())["error"]["code"] == "DeploymentNotFound"


def test_legacy_completions_plain_and_streamed_say_the_same(azure: AzureOpenAI, v1: OpenAI) -> None:
    plain = azure.completions.create(model=CHAT, prompt="Once upon a time", max_tokens=4)
    assert plain.object == "text_completion"
    assert plain.choices[0].finish_reason == "length"
    assert len(plain.choices[0].text.split()) == 4
    assert plain.usage is not None
    assert plain.usage.completion_tokens == 4
    streamed = v1.completions.create(model=CHAT, prompt="Once upon a time", max_tokens=4, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == plain.choices[0].text


# --- responses ---


def test_responses_create_stream_retrieve_input_items_delete(azure: AzureOpenAI, v1: OpenAI) -> None:
    made = v1.responses.create(model=CHAT, input="Hello there", instructions="Be brief.")
    assert made.status == "completed"
    assert made.output_text
    assert made.usage is not None
    assert made.usage.total_tokens == made.usage.input_tokens + made.usage.output_tokens
    with azure.responses.stream(model=CHAT, input="Stream this") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert final.output_text
    assert azure.responses.retrieve(final.id).output_text == final.output_text
    [item] = list(v1.responses.input_items.list(made.id))
    assert item.type == "message"
    assert item.role == "user"  # type: ignore[union-attr]
    v1.responses.delete(made.id)
    with pytest.raises(openai.NotFoundError):
        v1.responses.retrieve(made.id)


def test_a_chain_bills_earlier_turns_as_cached_input_and_reasoning_as_output(v1: OpenAI) -> None:
    first = v1.responses.create(model=CHAT, input="One", reasoning={"effort": "low"})
    assert first.usage is not None
    assert first.usage.output_tokens_details.reasoning_tokens == 4
    assert first.output[0].type == "reasoning"
    second = v1.responses.create(model=CHAT, input="Two", previous_response_id=first.id)
    assert second.usage is not None
    assert second.usage.input_tokens_details.cached_tokens == first.usage.total_tokens
    assert second.usage.input_tokens > first.usage.total_tokens
    assert second.previous_response_id == first.id


def test_responses_live_in_one_instance_only(v1: OpenAI) -> None:
    made = v1.responses.create(model=CHAT, input="Remember me")
    with SimulatorThread(SimulatorConfig(name="other", deployments=DEPLOYMENTS)) as other:
        client = OpenAI(base_url=f"{other.url}/openai/v1/", api_key="x", max_retries=0)
        with pytest.raises(openai.NotFoundError) as unknown:
            client.responses.retrieve(made.id)
        assert unknown.value.code == "not_found"
        with pytest.raises(openai.NotFoundError) as chained:
            client.responses.create(model=CHAT, input="Next", previous_response_id=made.id)
        assert chained.value.code == "previous_response_not_found"
        assert chained.value.param == "previous_response_id"  # type: ignore[attr-defined]
        client.close()
    unstored = v1.responses.create(model=CHAT, input="Forget me", store=False)
    with pytest.raises(openai.NotFoundError):
        v1.responses.retrieve(unstored.id)


def test_background_responses_progress_on_the_clock_and_cancel(clock: FakeClock, azure: AzureOpenAI) -> None:
    queued = azure.responses.create(model=CHAT, input="Slow one", background=True)
    assert queued.status == "queued"
    assert queued.output == []
    clock.advance(0.25)
    assert azure.responses.retrieve(queued.id).status == "in_progress"
    clock.advance(0.25)
    done = azure.responses.retrieve(queued.id)
    assert done.status == "completed"
    assert done.output_text
    assert azure.responses.cancel(done.id).status == "completed"  # too late: nothing changes
    other = azure.responses.create(model=CHAT, input="Stop me", background=True)
    assert azure.responses.cancel(other.id).status == "cancelled"
    clock.advance(1)
    assert azure.responses.retrieve(other.id).status == "cancelled"
    plain = azure.responses.create(model=CHAT, input="Quick")
    with pytest.raises(openai.BadRequestError):
        azure.responses.cancel(plain.id)


def test_responses_function_calls_and_json_schema(v1: OpenAI) -> None:
    tool = {"type": "function", "name": "get_weather", "parameters": WEATHER_PARAMETERS, "strict": True}
    called = v1.responses.create(model=CHAT, input="Weather?", tools=[tool])  # type: ignore[list-item]
    [call] = called.output
    assert call.type == "function_call"
    jsonschema.validate(json.loads(call.arguments), WEATHER_PARAMETERS)  # type: ignore[union-attr]
    answered = v1.responses.create(
        model=CHAT,
        previous_response_id=called.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "3C"}],  # type: ignore[union-attr]
        tools=[tool],  # type: ignore[list-item]
    )
    assert answered.output[0].type == "message"
    parsed = v1.responses.parse(model=CHAT, input="Who?", text_format=Person)
    assert isinstance(parsed.output_parsed, Person)


# --- files and batches ---


def batch_lines(*models: str) -> bytes:
    return b"".join(
        json.dumps(
            {
                "custom_id": f"req-{i}",
                "method": "POST",
                "url": "/chat/completions",
                "body": {"model": m, "messages": ask(f"q{i}")},
            }
        ).encode()
        + b"\n"
        for i, m in enumerate(models)
    )


def test_file_upload_then_batch_completes_with_output_and_error_files(clock: FakeClock, azure: AzureOpenAI) -> None:
    uploaded = azure.files.create(file=("requests.jsonl", batch_lines(CHAT, CHAT, "gpt-99")), purpose="batch")
    assert uploaded.status == "processed"
    assert uploaded.bytes > 0
    assert azure.files.retrieve(uploaded.id).filename == "requests.jsonl"
    batch = azure.batches.create(input_file_id=uploaded.id, endpoint="/chat/completions", completion_window="24h")
    assert batch.status == "validating"
    seen = [batch.status]
    for _ in range(3):
        clock.advance(0.2)
        seen.append(azure.batches.retrieve(batch.id).status)
    assert seen == ["validating", "in_progress", "finalizing", "completed"]
    done = azure.batches.retrieve(batch.id)
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (3, 2, 1)
    assert done.output_file_id
    assert done.error_file_id
    lines = [json.loads(x) for x in azure.files.content(done.output_file_id).text.splitlines()]
    assert [line["custom_id"] for line in lines] == ["req-0", "req-1"]
    assert all(line["response"]["body"]["usage"]["total_tokens"] > 0 for line in lines)
    [failed] = [json.loads(x) for x in azure.files.content(done.error_file_id).text.splitlines()]
    assert failed["response"]["status_code"] == 404
    assert batch.id in [b.id for b in azure.batches.list()]
    assert azure.files.delete(uploaded.id).deleted
    with pytest.raises(openai.NotFoundError):
        azure.files.retrieve(uploaded.id)


def test_batches_need_a_file_of_this_instance_and_can_be_cancelled(clock: FakeClock, v1: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        v1.batches.create(input_file_id="file-elsewhere", endpoint="/chat/completions", completion_window="24h")
    uploaded = v1.files.create(file=("in.jsonl", batch_lines(CHAT)), purpose="batch")
    batch = v1.batches.create(input_file_id=uploaded.id, endpoint="/chat/completions", completion_window="24h")
    assert v1.batches.cancel(batch.id).status == "cancelling"
    clock.advance(0.2)
    assert v1.batches.retrieve(batch.id).status == "cancelled"
    broken = v1.files.create(file=("bad.jsonl", b"not json\n"), purpose="batch")
    failed = v1.batches.create(input_file_id=broken.id, endpoint="/chat/completions", completion_window="24h")
    clock.advance(0.2)
    assert v1.batches.retrieve(failed.id).status == "failed"


def test_uploads_larger_than_the_limit_are_refused_with_413(v1: OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as refused:
        v1.files.create(file=("big.jsonl", b"x" * (65 * 1024)), purpose="batch")
    assert refused.value.status_code == 413


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data", b"--B\r\n"),  # no boundary: once a ValueError, a 500
        (
            "multipart/form-data; boundary=B",
            b'--B\r\nContent-Disposition: form-data; name="\x10"\r\n\r\nx\r\n--B--\r\n',
        ),
    ],
    ids=["no-boundary", "control-character-in-a-part-header"],
)
def test_a_multipart_body_that_cannot_be_parsed_is_a_400_as_the_service_answers(
    sim: SimulatorThread, content_type: str, body: bytes
) -> None:
    request = urllib.request.Request(
        f"{sim.url}/openai/v1/files", data=body, method="POST", headers={"content-type": content_type}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 400


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("batches", {"input_file_id": "file-1", "endpoint": [1], "completion_window": "24h"}),
        ("images/generations", {"model": "dall-e-3", "prompt": "fox", "response_format": ["url"]}),
        ("audio/speech", {"model": "tts", "input": "hi", "voice": "alloy", "response_format": {"a": 1}}),
        ("responses", {"model": CHAT, "input": "hi", "reasoning": {"effort": ["low"]}}),
    ],
)
def test_a_field_of_the_wrong_type_is_a_400_never_a_500(sim: SimulatorThread, path: str, body: object) -> None:
    # Found by the gateway's fuzzer: a list where a name was expected was looked up in a set (TypeError, 500).
    request = urllib.request.Request(
        f"{sim.url}/openai/v1/{path}",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"content-type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 400


# --- images and audio ---


def test_images_generate_as_base64_png_or_a_url_the_simulator_serves(azure: AzureOpenAI, v1: OpenAI) -> None:
    b64 = azure.images.generate(model="dall-e-3", prompt="a red fox", response_format="b64_json")
    assert b64.data
    png = base64.b64decode(b64.data[0].b64_json or "")
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert struct.unpack(">II", png[16:24]) == (8, 8)
    by_url = v1.images.generate(model="dall-e-3", prompt="a red fox")
    assert by_url.data
    with urllib.request.urlopen(by_url.data[0].url or "") as fetched:
        assert fetched.read() == png
    edited = azure.images.edit(model="dall-e-3", image=("in.png", png, "image/png"), prompt="make it blue")
    assert edited.data
    assert edited.data[0].b64_json


def test_audio_transcriptions_and_translations_in_every_format(azure: AzureOpenAI, v1: OpenAI) -> None:
    audio = ("speech.wav", b"RIFF-not-really-audio", "audio/wav")
    plain = azure.audio.transcriptions.create(model="whisper", file=audio)
    assert len(plain.text.split()) == 8
    assert azure.audio.transcriptions.create(model="whisper", file=audio, response_format="text") == plain.text + "\n"
    verbose = v1.audio.transcriptions.create(model="whisper", file=audio, response_format="verbose_json")
    assert verbose.text == plain.text
    assert verbose.segments
    srt = azure.audio.transcriptions.create(model="whisper", file=audio, response_format="srt")
    assert srt.startswith("1\n00:00:00,000 --> ")
    translated = v1.audio.translations.create(model="whisper", file=audio, response_format="verbose_json")
    assert translated.language == "english"  # type: ignore[union-attr]


def test_speech_is_real_audio_with_the_right_content_type(azure: AzureOpenAI, v1: OpenAI) -> None:
    mp3 = azure.audio.speech.create(model="tts", input="one two three four", voice="alloy")
    assert mp3.response.headers["content-type"] == "audio/mpeg"
    assert mp3.content[:2] == b"\xff\xfb"
    wav = v1.audio.speech.create(model="tts", input="one two three four", voice="alloy", response_format="wav")
    assert wav.response.headers["content-type"] == "audio/wav"
    with wave.open(io.BytesIO(wav.content)) as reader:
        assert reader.getnchannels() == 1
        assert reader.getnframes() / reader.getframerate() == pytest.approx(1.0)
    with pytest.raises(openai.BadRequestError):
        v1.audio.speech.create(model="tts", input="x", voice="alloy", response_format="opus")
