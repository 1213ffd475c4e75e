"""End to end: every operation an app uses, through the official `openai` SDK, the local Functions host and simulators.

Responses (plain, streamed, chains pinned to the backend that stored them),
files and batches (affinity of their ids, lists merged from every backend),
legacy completions, images, audio uploads and speech downloads, and the
errors the SDK must or must not retry.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import openai
import pytest
from openai import AzureOpenAI, OpenAI
from pydantic import BaseModel

from simulator import SimulatorConfig, SimulatorThread
from tests.fixtures.servers import DEMO_ADMIN_KEY as ADMIN
from tests.fixtures.servers import DEMO_KEY as KEY
from tests.fixtures.servers import GatewayServer, backend

RESPONSES_VERSION = "2025-04-01-preview"


@pytest.fixture
def sims(sims: Callable[..., SimulatorThread]) -> Callable[..., SimulatorThread]:
    """The shared simulators, with batches that finish in a fraction of a second."""

    def make(name: str, **kwargs: Any) -> SimulatorThread:
        kwargs.setdefault("batch_step_seconds", 0.05)
        return sims(name, **kwargs)

    return make


def v1(gw: GatewayServer) -> OpenAI:
    return OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0)


def azure(gw: GatewayServer, api_version: str = RESPONSES_VERSION) -> AzureOpenAI:
    return AzureOpenAI(azure_endpoint=gw.url, api_key=KEY, api_version=api_version, max_retries=0)


def raw(
    gw: GatewayServer,
    path: str,
    *,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], dict[str, Any]]:
    request = urllib.request.Request(
        gw.url + path, data=body, method=method, headers={"api-key": KEY, **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, json.loads(err.read() or b"{}")


def paths(sim: SimulatorThread) -> list[str]:
    return [str(r["path"]) for r in sim.requests()]


# --- responses ---------------------------------------------------------------------------------


def test_a_response_plain_through_both_shapes(
    sims: Callable[..., SimulatorThread], demo_gateway: Callable[..., Any]
) -> None:
    sim = sims("a")
    gw = demo_gateway([backend("a", sim.url)])
    plain = v1(gw).responses.create(model="chat", input="Say something about gateways", max_output_tokens=8)
    assert plain.output_text
    assert plain.usage is not None
    assert plain.usage.output_tokens > 0
    shaped = azure(gw).responses.create(model="chat", input="And again", max_output_tokens=8)
    assert shaped.output_text
    assert shaped.id != plain.id
    assert "/openai/v1/responses" in paths(sim)
    assert "/openai/responses" in paths(sim)  # the api-version shape goes upstream in that shape


def test_a_streamed_response_is_relayed_event_by_event_and_metered_from_response_completed(
    sims: Callable[..., SimulatorThread], demo_gateway: Callable[..., Any]
) -> None:
    gw = demo_gateway([backend("a", sims("a").url)], GATEWAY_METRICS_ENDPOINT="true")
    client = v1(gw)
    events = list(client.responses.create(model="chat", input="Stream me", max_output_tokens=6, stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created"
    assert kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds
    assert not any(k == "error" for k in kinds)
    completed = events[-1]
    assert completed.type == "response.completed"
    usage = completed.response.usage
    assert usage is not None
    # The stored response is found again (the stream pinned its id) and its usage reached the ledger and metrics.
    assert client.responses.retrieve(completed.response.id).status == "completed"
    status, _, report = raw(gw, "/usage")
    assert status == 200, report
    current = report["current"]
    # Exactly the streamed call's usage: reading the stored response again charges nothing.
    assert current["prompt_tokens"] == usage.input_tokens
    assert current["completion_tokens"] == usage.output_tokens
    assert current["requests"] == 2
    request = urllib.request.Request(gw.url + "/metrics", headers={"x-admin-key": ADMIN})
    with urllib.request.urlopen(request, timeout=10) as resp:
        metrics = resp.read().decode()
    sums = {
        kind: sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("gen_ai_client_token_usage_sum{") and f'gen_ai_token_type="{kind}"' in line
        )
        for kind in ("input", "output")
    }
    assert sums == {"input": usage.input_tokens, "output": usage.output_tokens}


def test_a_chain_of_follow_ups_lands_on_the_backend_that_stored_each_predecessor(
    sims: Callable[..., SimulatorThread], demo_gateway: Callable[..., Any]
) -> None:
    a, b = sims("a"), sims("b")
    gw = demo_gateway([backend("a", a.url), backend("b", b.url)])
    client = v1(gw)
    first = client.responses.with_raw_response.create(model="chat", input="Start a story", max_output_tokens=4)
    home = first.headers["x-gateway-backend"]
    previous = first.parse().id
    for turn in range(9):
        raw_reply = client.responses.with_raw_response.create(
            model="chat", input=f"Go on ({turn})", previous_response_id=previous, max_output_tokens=4
        )
        assert raw_reply.headers["x-gateway-backend"] == home
        previous = raw_reply.parse().id
    items = client.responses.input_items.list(previous)
    assert items.data
    client.responses.delete(previous)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(previous)


def test_a_pinned_backend_that_is_down_answers_503_with_retry_after_not_another_backends_404(
    sims: Callable[..., SimulatorThread], demo_gateway: Callable[..., Any]
) -> None:
    a, b = sims("a"), sims("b")
    gw = demo_gateway([backend("a", a.url), backend("b", b.url)])
    client = v1(gw)
    made = client.responses.with_raw_response.create(model="chat", input="Remember me", max_output_tokens=4)
    home = made.headers["x-gateway-backend"]
    (a if home == "a" else b).set_faults(down=True)
    with pytest.raises(openai.APIStatusError) as caught:
        client.responses.create(model="chat", input="Next", previous_response_id=made.parse().id)
    assert caught.value.status_code == 503
    assert caught.value.code == "affinity_backend_unavailable"
    assert caught.value.response.headers["retry-after"]
    # A call without a stored predecessor still fails over to the other backend.
    assert client.responses.create(model="chat", input="Fresh start", max_output_tokens=4).output_text


def test_another_subscriptions_response_is_not_found(
    sims: Callable[..., SimulatorThread], demo_gateway: Callable[..., Any]
) -> None:
    gw = demo_gateway([backend("a", sims("a").url)])
    made = v1(gw).responses.create(model="chat", input="Mine", max_output_tokens=4)
    status, _, created = raw(
        gw,
        "/gateway/admin/subscriptions",
        method="POST",
        body=json.dumps({"name": "other team"}).encode(),
        headers={"x-admin-key": ADMIN, "content-type": "application/json"},
    )
    assert status in (200, 201), created
    other = OpenAI(base_url=gw.url + "/v1", api_key=created["primary_key"], max_retries=0)
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(made.id)


# --- chat features through the gateway ----------------------------------------------------------


class Weather(BaseModel):
    city: str
    degrees: int


def test_chat_completions_parse_with_a_pydantic_model(
    sims: Callable[..., SimulatorThread], demo_gateway: Callable[..., Any]
) -> None:
    gw = demo_gateway([backend("a", sims("a").url)])
    parsed = v1(gw).chat.completions.parse(
        model="chat", messages=[{"role": "user", "content": "Weather in Paris?"}], response_format=Weather
    )
    weather = parsed.choices[0].message.parsed
    assert isinstance(weather, Weather)


def test_streamed_tool_calls(sims: Callable[..., SimulatorThread], demo_gateway: Callable[..., Any]) -> None:
    gw = demo_gateway([backend("a", sims("a").url)])
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
        }
    ]
    chunks = list(
        azure(gw, "2024-10-21").chat.completions.create(
            model="chat",
            messages=[{"role": "user", "content": "Weather in Oslo?"}],
            tools=tools,  # type: ignore[arg-type]
            tool_choice="required",
            stream=True,
        )
    )
    arguments = "".join(
        call.function.arguments or ""
        for c in chunks
        if c.choices
        for call in (c.choices[0].delta.tool_calls or [])
        if call.function is not None
    )
    assert "city" in json.loads(arguments)
    assert any(c.choices and c.choices[0].finish_reason == "tool_calls" for c in chunks)


# --- files and batches -----------------------------------------------------------------------------


def _batch_file(lines: int) -> bytes:
    return b"".join(
        json.dumps(
            {
                "custom_id": f"r{i}",
                "method": "POST",
                "url": "/chat/completions",
                "body": {"model": "chat", "messages": [{"role": "user", "content": f"Question {i}"}], "max_tokens": 5},
            }
        ).encode()
        + b"\n"
        for i in range(lines)
    )


def test_a_file_upload_then_a_batch_that_references_it_polled_to_completion(
    sims: Callable[..., SimulatorThread], demo_gateway: Callable[..., Any]
) -> None:
    a, b = sims("a"), sims("b")
    gw = demo_gateway([backend("a", a.url), backend("b", b.url)])
    client = azure(gw)
    uploaded = client.files.with_raw_response.create(file=("requests.jsonl", _batch_file(3)), purpose="batch")
    home = uploaded.headers["x-gateway-backend"]
    file = uploaded.parse()
    assert file.bytes > 0
    # The upload reached the backend byte for byte, as a multipart form with its own boundary.
    upload = [r for r in (a if home == "a" else b).requests() if str(r["path"]).endswith("/files")][-1]
    assert upload["body"]["file"]["bytes"] == len(_batch_file(3))  # type: ignore[index]
    made = client.batches.with_raw_response.create(
        input_file_id=file.id, endpoint="/chat/completions", completion_window="24h"
    )
    assert made.headers["x-gateway-backend"] == home  # the batch goes where its input file is
    batch = made.parse()
    for _ in range(200):
        batch = client.batches.retrieve(batch.id)
        if batch.status in ("completed", "failed"):
            break
        time.sleep(0.02)
    assert batch.status == "completed"
    assert batch.output_file_id is not None
    output = client.files.content(batch.output_file_id).read()  # pinned when the batch was seen complete
    lines = [json.loads(line) for line in output.splitlines()]
    assert len(lines) == 3
    assert {line["custom_id"] for line in lines} == {"r0", "r1", "r2"}
    listed = v1(gw).files.list()
    assert {f.id for f in listed.data} >= {file.id, batch.output_file_id}
    assert batch.id in {b.id for b in client.batches.list().data}
    assert client.files.delete(file.id).deleted
    # Azure's batch object has no usage: the gateway metered the output file's lines, once however often polled.
    client.batches.retrieve(batch.id)
    expected = sum(line["response"]["body"]["usage"]["total_tokens"] for line in lines)
    for _ in range(100):
        _, _, report = raw(gw, "/usage")
        if report["current"]["total_tokens"] >= expected:
            break
        time.sleep(0.05)
    assert report["current"]["total_tokens"] == expected


def test_lists_show_only_the_callers_own_objects(
    sims: Callable[..., SimulatorThread], demo_gateway: Callable[..., Any]
) -> None:
    sim = sims("a")
    gw = demo_gateway([backend("a", sim.url)])
    # A file uploaded to the backend directly, not through the gateway: no subscription of the gateway owns it.
    boundary = "xyz123"
    form = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.jsonl"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n{}\r\n"
        f"--{boundary}--\r\n"
    ).encode()
    direct = urllib.request.Request(
        sim.url + "/openai/v1/files",
        data=form,
        method="POST",
        headers={"api-key": "sim-key", "content-type": f"multipart/form-data; boundary={boundary}"},
    )
    with urllib.request.urlopen(direct, timeout=10) as resp:
        foreign = json.loads(resp.read())["id"]
    mine = v1(gw).files.create(file=("mine.jsonl", b"{}\n"), purpose="batch")
    listed = {f.id for f in v1(gw).files.list().data}
    assert mine.id in listed
    assert foreign not in listed


# --- legacy completions, images, audio ------------------------------------------------------------


def test_legacy_completions_plain_and_streamed_are_metered(
    sims: Callable[..., SimulatorThread], demo_gateway: Callable[..., Any]
) -> None:
    gw = demo_gateway([backend("a", sims("a").url)])
    done = azure(gw, "2024-10-21").completions.create(model="chat", prompt="Once upon a time", max_tokens=5)
    assert done.choices[0].text
    assert done.usage is not None
    streamed = list(v1(gw).completions.create(model="chat", prompt="Once upon a time", max_tokens=5, stream=True))
    assert "".join(c.choices[0].text for c in streamed if c.choices)
    _, _, report = raw(gw, "/usage")
    assert report["current"]["requests"] == 2
    assert report["current"]["completion_tokens"] >= done.usage.completion_tokens


def test_images_generated_and_edited(sims: Callable[..., SimulatorThread], demo_gateway: Callable[..., Any]) -> None:
    gw = demo_gateway([backend("a", sims("a").url)])
    made = azure(gw, "2024-10-21").images.generate(model="chat", prompt="A red gateway", response_format="b64_json")
    assert made.data
    assert made.data[0].b64_json
    png = __import__("base64").b64decode(made.data[0].b64_json)
    edited = v1(gw).images.edit(model="chat", image=("in.png", png, "image/png"), prompt="Make it blue")
    assert edited.data
    assert edited.data[0].b64_json


def test_an_audio_upload_is_transcribed_through_both_shapes(
    sims: Callable[..., SimulatorThread], demo_gateway: Callable[..., Any]
) -> None:
    sim = sims("a")
    gw = demo_gateway([backend("a", sim.url)])
    audio = b"RIFF" + bytes(4000)
    text = azure(gw, "2024-10-21").audio.transcriptions.create(model="chat", file=("talk.wav", audio, "audio/wav"))
    assert text.text
    translated = v1(gw).audio.translations.create(model="chat", file=("talk.wav", audio, "audio/wav"))
    assert translated.text
    sent = sim.requests()[-1]
    assert sent["path"] == "/openai/deployments/chat/audio/translations"  # `model` read from the form
    assert sent["body"]["file"]["bytes"] == len(audio)  # type: ignore[index]


def test_speech_is_downloaded_as_a_binary_stream(
    sims: Callable[..., SimulatorThread], demo_gateway: Callable[..., Any]
) -> None:
    gw = demo_gateway([backend("a", sims("a").url)])
    text = " ".join(["word"] * 400)
    with v1(gw).audio.speech.with_streaming_response.create(
        model="chat", voice="alloy", input=text, response_format="wav"
    ) as response:
        assert response.headers["content-type"] == "audio/wav"
        chunks = list(response.iter_bytes())
    audio = b"".join(chunks)
    assert audio.startswith(b"RIFF")
    assert len(audio) > 100_000  # 100 s of 24 kHz 16-bit silence, passed through as it came


def test_an_upload_over_its_limit_is_413_and_not_retried(
    sims: Callable[..., SimulatorThread], demo_gateway: Callable[..., Any]
) -> None:
    gw = demo_gateway([backend("a", sims("a").url)])
    client = OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=2)
    with pytest.raises(openai.APIStatusError) as caught:
        client.audio.transcriptions.create(model="chat", file=("big.wav", bytes(26 * 1024 * 1024), "audio/wav"))
    assert caught.value.status_code == 413
    assert caught.value.response.headers["x-should-retry"] == "false"


def test_a_request_larger_than_the_rate_limit_is_429_and_not_retried_while_a_throttled_one_says_when(
    sims: Callable[..., SimulatorThread], demo_gateway: Callable[..., Any]
) -> None:
    gw = demo_gateway([backend("a", sims("a").url)])
    status, _, created = raw(
        gw,
        "/gateway/admin/subscriptions",
        method="POST",
        body=json.dumps({"name": "small", "tokens_per_minute": 100, "requests_per_minute": 1}).encode(),
        headers={"x-admin-key": ADMIN, "content-type": "application/json"},
    )
    assert status in (200, 201), created
    client = OpenAI(base_url=gw.url + "/v1", api_key=created["primary_key"], max_retries=0)
    with pytest.raises(openai.RateLimitError) as too_large:
        client.responses.create(model="chat", input="hello", max_output_tokens=5000)
    assert too_large.value.response.headers["x-should-retry"] == "false"
    client.responses.create(model="chat", input="hello", max_output_tokens=5)
    with pytest.raises(openai.RateLimitError) as throttled:
        client.responses.create(model="chat", input="hello", max_output_tokens=5)
    headers = throttled.value.response.headers
    assert "x-should-retry" not in headers
    assert int(headers["retry-after"]) >= 1
    assert int(headers["retry-after-ms"]) >= 1


def test_an_unsupported_route_lists_the_supported_operations(
    sims: Callable[..., SimulatorThread], demo_gateway: Callable[..., Any]
) -> None:
    gw = demo_gateway([backend("a", sims("a").url)])
    status, _, body = raw(gw, "/v1/assistants", method="POST", body=b"{}")
    assert status == 404
    assert body["error"]["code"] == "route_not_found"
    assert "POST responses" in body["error"]["message"]
    assert "POST audio/transcriptions" in body["error"]["message"]
    status, _, body = raw(gw, "/openai/realtime?api-version=2025-04-01-preview&deployment=chat")
    assert status == 404
    assert body["error"]["code"] == "realtime_not_supported"
    status, headers, body = raw(gw, "/v1/responses/resp_1", method="PUT", body=b"{}")
    assert status == 405
    assert "GET" in headers["allow"]


def test_a_background_response_is_charged_once_by_the_first_read_that_finds_it_done(
    sims: Callable[..., SimulatorThread], demo_gateway: Callable[..., Any]
) -> None:
    gw = demo_gateway([backend("a", sims("a", background_seconds=0.2).url)])
    client = v1(gw)
    queued = client.responses.create(model="chat", input="Take your time", background=True, max_output_tokens=5)
    assert queued.status in ("queued", "in_progress")
    assert queued.usage is None
    done = queued
    for _ in range(100):
        done = client.responses.retrieve(queued.id)
        if done.status == "completed":
            break
        time.sleep(0.02)
    assert done.usage is not None
    for _ in range(3):
        client.responses.retrieve(queued.id)  # later reads charge nothing
    _, _, report = raw(gw, "/usage")
    assert report["current"]["prompt_tokens"] == done.usage.input_tokens
    assert report["current"]["completion_tokens"] == done.usage.output_tokens


def test_an_id_with_no_record_is_looked_for_on_every_backend(
    sims: Callable[..., SimulatorThread], demo_gateway: Callable[..., Any]
) -> None:
    a, b = sims("a"), sims("b")
    gw = demo_gateway([backend("a", a.url), backend("b", b.url)])
    # Stored on b behind the gateway's back (as before the gateway existed): no affinity record.
    direct = OpenAI(base_url=b.url + "/openai/v1", api_key="sim-key", max_retries=0)
    stored = direct.responses.create(model="chat", input="Made elsewhere", max_output_tokens=3)
    found = v1(gw).responses.with_raw_response.retrieve(stored.id)
    assert found.headers["x-gateway-backend"] == "b"
    assert found.parse().id == stored.id
    follow = v1(gw).responses.with_raw_response.create(
        model="chat", input="Continue", previous_response_id=stored.id, max_output_tokens=3
    )
    assert follow.headers["x-gateway-backend"] == "b"
    with pytest.raises(openai.NotFoundError):  # on no backend at all: the last backend's 404
        v1(gw).responses.retrieve("resp_nowhere")


def test_a_response_names_the_backends_own_deployment_upstream(demo_gateway: Callable[..., Any]) -> None:
    config = SimulatorConfig(name="a", deployments=("gpt-4o-mini-2024-07-18",), api_key="sim-key")
    with SimulatorThread(config) as sim:
        gw = demo_gateway([{"name": "a", "endpoint": sim.url, "deployments": {"chat": "gpt-4o-mini-2024-07-18"}}])
        made = v1(gw).responses.create(model="chat", input="Who am I talking to?", max_output_tokens=3)
        assert made.output_text
        sent = sim.requests()[-1]["body"]
        assert isinstance(sent, dict)
        assert sent["model"] == "gpt-4o-mini-2024-07-18"


def test_speech_cut_by_the_backend_is_cut_for_the_caller_too(
    sims: Callable[..., SimulatorThread], demo_gateway: Callable[..., Any]
) -> None:
    sim = sims("a")
    gw = demo_gateway([backend("a", sim.url)])
    sim.set_faults(drop_after_headers=True)
    body = json.dumps({"model": "chat", "voice": "alloy", "input": " ".join(["word"] * 400), "response_format": "wav"})
    request = urllib.request.Request(
        gw.url + "/v1/audio/speech",
        data=body.encode(),
        method="POST",
        headers={"api-key": KEY, "content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response, pytest.raises(http.client.IncompleteRead):
        response.read()  # a truncated body must not look complete: the chunked body ends without its last chunk
    sim.clear_faults()
    with v1(gw).audio.speech.with_streaming_response.create(
        model="chat", voice="alloy", input="short", response_format="wav"
    ) as response:
        assert b"".join(response.iter_bytes()).startswith(b"RIFF")


def test_a_subscription_limited_to_some_deployments_may_use_responses_but_not_files_or_batches(
    sims: Callable[..., SimulatorThread], demo_gateway: Callable[..., Any]
) -> None:
    gw = demo_gateway([backend("a", sims("a").url)])
    status, _, created = raw(
        gw,
        "/gateway/admin/subscriptions",
        method="POST",
        body=json.dumps({"name": "chat only", "allowed_deployments": ["chat"]}).encode(),
        headers={"x-admin-key": ADMIN, "content-type": "application/json"},
    )
    assert status in (200, 201), created
    client = OpenAI(base_url=gw.url + "/v1", api_key=created["primary_key"], max_retries=0)
    made = client.responses.create(model="chat", input="Allowed", max_output_tokens=3)
    assert client.responses.retrieve(made.id).id == made.id
    with pytest.raises(openai.PermissionDeniedError):
        client.files.create(file=("x.jsonl", b"{}\n"), purpose="batch")
    with pytest.raises(openai.PermissionDeniedError):
        client.responses.create(model="embed", input="Not allowed")


def test_a_multipart_body_no_backend_can_read_is_400_and_never_forwarded(
    sims: Callable[..., SimulatorThread], demo_gateway: Callable[..., Any]
) -> None:
    # Found by the fuzzer: a form without its boundary went to every backend, each answered 500, and the caller got
    # 503 no_backend_available (and, repeated, the breakers' attention) for a mistake of its own.
    a, b = sims("a"), sims("b")
    gw = demo_gateway([backend("a", a.url), backend("b", b.url)])
    form = b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\nRIFF\r\n--B--\r\n'
    for content_type, body in (
        ("multipart/form-data", form),
        ("multipart/form-data; boundary=other", form),
        ("multipart/form-data; boundary=B", form.removesuffix(b"--B--\r\n")),
    ):
        status, _, answer = raw(
            gw, "/v1/audio/transcriptions", method="POST", body=body, headers={"content-type": content_type}
        )
        assert (status, answer["error"]["code"]) == (400, "invalid_multipart")
    status, _, answer = raw(
        gw,
        "/openai/deployments/chat/images/edits",
        method="POST",
        body=b'--B\r\nContent-Disposition: form-data; name="prompt"\r\n\r\ncat\r\n--B--\r\n',
        headers={"content-type": "multipart/form-data; boundary=B"},
    )
    assert (status, answer["error"]["param"]) == (400, "image")
    assert paths(a) == paths(b) == []


def test_a_list_every_backend_refuses_is_their_4xx_not_a_503(
    sims: Callable[..., SimulatorThread], demo_gateway: Callable[..., Any]
) -> None:
    # Found by the fuzzer: `GET /v1/batches?api-version=2024-10-21` (a version the v1 routes refuse) was refused
    # 400 by every backend, and the caller was told 503 "retry later", with Retry-After.
    gw = demo_gateway([backend("a", sims("a").url), backend("b", sims("b").url)])
    for path in ("/v1/batches?api-version=2024-10-21", "/openai/v1/files?api-version=2024-10-21"):
        status, headers, answer = raw(gw, path)
        assert status == 400, (path, answer)
        assert answer["error"]["param"] == "api-version"
        assert "retry-after" not in headers
    status, _, answer = raw(gw, "/v1/batches")
    assert (status, answer["object"]) == (200, "list")
