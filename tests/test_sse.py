"""The SSE relay: events forwarded whole as they complete, usage read, our usage chunk stripped."""

from __future__ import annotations

import json

from shared.models import Usage
from shared.sse import PassThrough, SseRelay, error_event


def _event(payload: object) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


CHUNK = _event({"choices": [{"delta": {"content": "hi"}}], "usage": None})
USAGE = _event({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}})


def test_events_split_across_reads_are_forwarded_whole() -> None:
    relay = SseRelay(strip_usage_chunk=False)
    data = CHUNK + CHUNK
    out = relay.feed(data[:10]) + relay.feed(data[10:40]) + relay.feed(data[40:])
    assert out == data
    assert relay.feed(b"") == b""


def test_usage_chunk_is_read_and_stripped_when_we_asked_for_it() -> None:
    relay = SseRelay(strip_usage_chunk=True)
    out = relay.feed(CHUNK + USAGE + b"data: [DONE]\n\n")
    assert out == CHUNK + b"data: [DONE]\n\n"
    assert relay.usage == Usage(7, 3)
    assert relay.done


def test_usage_chunk_kept_when_the_client_asked_for_it() -> None:
    relay = SseRelay(strip_usage_chunk=False)
    assert relay.feed(USAGE) == USAGE
    assert relay.usage == Usage(7, 3)


def test_crlf_separated_events() -> None:
    relay = SseRelay(strip_usage_chunk=False)
    assert relay.feed(b"data: {}\r\n\r\ndata: [DONE]\r\n\r\n") == b"data: {}\r\n\r\ndata: [DONE]\r\n\r\n"
    assert relay.done


def test_error_event_is_an_openai_error_envelope() -> None:
    payload = json.loads(error_event("boom")[6:])
    assert payload["error"]["message"] == "boom"
    assert set(payload["error"]) == {"message", "type", "code", "param"}


def _typed(kind: str, **fields: object) -> bytes:
    return f"event: {kind}\ndata: ".encode() + json.dumps({"type": kind, **fields}).encode() + b"\n\n"


def test_a_responses_stream_names_its_id_first_and_its_usage_last_and_ends_without_done() -> None:
    relay = SseRelay(strip_usage_chunk=False, typed=True)
    created = _typed("response.created", response={"id": "resp_9", "usage": None})
    delta = _typed("response.output_text.delta", delta="hi")
    usage = {
        "input_tokens": 11,
        "input_tokens_details": {"cached_tokens": 4},
        "output_tokens": 7,
        "output_tokens_details": {"reasoning_tokens": 2},
        "total_tokens": 18,
    }
    completed = _typed("response.completed", response={"id": "resp_9", "usage": usage})
    out = relay.feed(created[:9]) + relay.feed(created[9:] + delta + delta) + relay.feed(completed)
    assert out == created + delta + delta + completed  # forwarded unchanged
    assert relay.object_id == "resp_9"
    assert relay.content_events == 2
    assert relay.done
    assert relay.usage == Usage(11, 7, 4, 2)


def test_a_responses_stream_cut_before_response_completed_is_not_done() -> None:
    relay = SseRelay(strip_usage_chunk=False, typed=True)
    relay.feed(_typed("response.created", response={"id": "resp_1"}) + _typed("response.output_text.delta", delta="x"))
    relay.end()
    assert not relay.done
    assert relay.usage is None


def test_bytes_pass_through_unchanged_and_are_complete_when_they_end() -> None:
    relay = PassThrough()
    assert relay.feed(b"RIFF\x00\x01\n\n") == b"RIFF\x00\x01\n\n"
    assert not relay.done
    relay.end()
    assert relay.done
