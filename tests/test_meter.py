"""The meter's reckoning of what a cut stream really sent."""

from __future__ import annotations

import json
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.meter import SentContent
from shared.tokens import count_text


def _event(delta: dict[str, object]) -> bytes:
    chunk = {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta}]}
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def test_sent_content_counts_the_text_of_content_deltas_not_events() -> None:
    sent = SentContent()
    sent.feed(_event({"role": "assistant", "content": ""}))  # the role event carries no text
    sent.feed(_event({"content": "Load balancing spreads requests across several backends, "}))
    sent.feed(_event({"content": 'so one "slow" backend\nslows nobody. 負荷分散'}))
    text = 'Load balancing spreads requests across several backends, so one "slow" backend\nslows nobody. 負荷分散'
    assert sent.text() == text
    assert sent.tokens() == count_text(text)
    assert sent.tokens() > 3  # one per event would say 3


def test_sent_content_of_a_stream_with_only_a_role_event_is_nothing() -> None:
    sent = SentContent()
    sent.feed(_event({"role": "assistant", "content": ""}) + b"data: [DONE]\n\n")
    assert sent.tokens() == 0


def _reference(events: list[bytes]) -> str:
    """What the pattern alone reads: the reckoning before the compact form got its own path."""
    escaped = b"".join(part for e in events for part in re.findall(rb'"content"\s*:\s*"((?:[^"\\]|\\.)*)"', e))
    try:
        text: str = json.loads(b'"' + escaped + b'"')
    except (json.JSONDecodeError, UnicodeDecodeError):
        return escaped.decode("utf-8", "replace")
    return text


_texts = st.text(alphabet=st.sampled_from(["a", " ", '"', "\\", "\n", "é", "負", "\u2028", "}", ":", ","]), max_size=12)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.tuples(st.one_of(st.none(), _texts), st.booleans(), st.booleans()),
        min_size=1,
        max_size=6,
    )
)
def test_the_compact_path_reads_what_the_pattern_reads(deltas: list[tuple[str | None, bool, bool]]) -> None:
    # Compact (as Azure sends it) or spaced JSON, null content, quotes and backslashes, several events in one read.
    events: list[bytes] = []
    for content, compact, together in deltas:
        chunk = {"choices": [{"index": 0, "delta": {"content": content}}]}
        body = json.dumps(chunk, separators=(",", ":") if compact else (", ", ": "), ensure_ascii=False).encode()
        event = b"data: " + body + b"\n\n"
        if together and events:
            events[-1] += event
        else:
            events.append(event)
    sent = SentContent()
    for event in events:
        sent.feed(event)
    assert sent.text() == _reference(events)
