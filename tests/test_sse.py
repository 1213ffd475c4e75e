"""The SSE relay: events forwarded whole as they complete, usage read, our usage chunk stripped."""

from __future__ import annotations

import json

from shared.models import Usage
from shared.sse import SseRelay, error_event


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
