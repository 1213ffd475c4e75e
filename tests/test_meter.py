"""The meter's reckoning of what a cut stream really sent."""

from __future__ import annotations

import json

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
