"""The SSE relay: events forwarded whole as they complete, usage read, our usage chunk stripped."""

from __future__ import annotations

import json

import pytest

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


def _split_everywhere(relay: SseRelay, data: bytes, step: int) -> bytes:
    return b"".join(relay.feed(data[i : i + step]) for i in range(0, len(data), step))


# As Azure OpenAI and the simulator send it: compact JSON, "usage":null on every chunk but the last.
COMPACT = (
    b"data: "
    + json.dumps({"choices": [{"delta": {"content": "hi"}}], "usage": None}, separators=(",", ":")).encode()
    + b"\n\n"
)


@pytest.mark.parametrize("chunk", [CHUNK, COMPACT], ids=["spaced", "compact"])
def test_every_way_of_cutting_a_stream_into_reads_gives_the_same_events_usage_and_counts(chunk: bytes) -> None:
    stream = chunk * 5 + USAGE + b"data: [DONE]\n\n"
    for strip in (True, False):
        expected = chunk * 5 + (b"" if strip else USAGE) + b"data: [DONE]\n\n"
        for step in (1, 7, 50, len(chunk), len(chunk) + 3, len(chunk) * 2, len(stream)):
            relay = SseRelay(strip_usage_chunk=strip)
            assert _split_everywhere(relay, stream, step) == expected, (strip, step)
            assert relay.usage == Usage(7, 3)
            assert relay.done
            assert relay.content_events == 5
            assert relay.leftover() == b""


def test_a_stream_cut_before_its_usage_counts_the_content_events_sent() -> None:
    relay = SseRelay(strip_usage_chunk=True)
    assert relay.feed(COMPACT * 3 + COMPACT[:20]) == COMPACT * 3
    assert (relay.usage, relay.done, relay.content_events) == (None, False, 3)
    assert relay.leftover() == COMPACT[:20]


def test_a_usage_object_with_spaces_or_crlf_framing_is_still_read_and_stripped() -> None:
    spaced = b'data: {"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 1}}\n\n'
    relay = SseRelay(strip_usage_chunk=True)
    assert relay.feed(CHUNK + spaced + b"data: [DONE]\n\n") == CHUNK + b"data: [DONE]\n\n"
    assert relay.usage == Usage(2, 1)
    crlf = CHUNK.replace(b"\n\n", b"\r\n\r\n")
    relay = SseRelay(strip_usage_chunk=True)
    usage = USAGE.replace(b"\n\n", b"\r\n\r\n")
    assert _split_everywhere(relay, crlf + usage + b"data: [DONE]\r\n\r\n", 9) == crlf + b"data: [DONE]\r\n\r\n"
    assert relay.usage == Usage(7, 3)
    assert relay.done
