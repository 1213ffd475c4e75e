"""What the simulated model says and how it counts: lorem-ipsum completions, cheap token counts, hash embeddings.

Everything here is deterministic: the same request always gets the same
words, counts and vectors, streamed or not, so tests can assert on them and a
cache in front of the simulator sees stable answers.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import itertools
import math
import re
import struct
import zlib
from collections.abc import Callable, Sequence

import numpy as np

Embedder = Callable[[list[str]], list[list[float]]]

_LOREM = (
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et "
    "dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris nisi ut aliquip ex "
    "ea commodo consequat. Duis aute irure dolor in reprehenderit in voluptate velit esse cillum dolore eu fugiat "
    "nulla pariatur. Excepteur sint occaecat cupidatat non proident, sunt in culpa qui officia deserunt mollit "
    "anim id est laborum."
)
WORDS: tuple[str, ...] = tuple(_LOREM.split())

# Per-message overhead in the spirit of OpenAI's cookbook count (3 per message, 3 to prime the reply).
TOKENS_PER_MESSAGE = 3
TOKENS_PER_REPLY = 3

CONTENT_FILTER_TRIGGER = "[[content_filter]]"


def message_text(content: object) -> str:
    """The text of a message's `content`: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def count_prompt_tokens(messages: Sequence[object]) -> int:
    """Whitespace-separated words of every message, plus 3 per message and 3 for the reply."""
    total = TOKENS_PER_REPLY
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        total += TOKENS_PER_MESSAGE + len(message_text(content).split())
    return total


def last_user_text(messages: Sequence[object]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return message_text(message.get("content"))
    return ""


def completion_offset(prompt: str, choice: int) -> int:
    """Where in the lorem text an answer starts: from the prompt (the last user message), so prompts differ."""
    seed = zlib.crc32(prompt.encode())
    return (seed + choice * 11) % len(WORDS)


@functools.lru_cache(maxsize=4096)
def completion_pieces(offset: int, tokens: int) -> tuple[str, ...]:
    """`tokens` words from `offset`, each a stream piece: the first bare, the rest with their leading space."""
    return tuple(
        WORDS[(offset + i) % len(WORDS)] if i == 0 else " " + WORDS[(offset + i) % len(WORDS)] for i in range(tokens)
    )


@functools.lru_cache(maxsize=4096)
def completion_text(offset: int, tokens: int) -> str:
    return "".join(completion_pieces(offset, tokens))


_WORD_RE = re.compile(r"\w+")


def hash_embed(texts: list[str], dimensions: int = 384) -> list[list[float]]:
    """Unit vectors by feature hashing of words and word pairs.

    Identical texts get identical vectors; texts that share words get close
    ones (and word order matters a little, through the pairs), which gives a
    semantic cache in front of the simulator something meaningful to match.
    """
    return [_hash_vector(text, dimensions) for text in texts]


def _hash_vector(text: str, dimensions: int) -> list[float]:
    words = _WORD_RE.findall(text.lower())
    terms = words + [f"{a} {b}" for a, b in itertools.pairwise(words)] or [text]
    weights = np.array([1.0] * len(words) + [0.5] * (len(terms) - len(words)) or [1.0])
    # Each term is a dense pseudo-random direction (its hash, read as signed bytes), so every prefix of the
    # vector carries meaning and `dimensions` truncation keeps texts apart, as with text-embedding-3.
    directions = np.frombuffer(b"".join(_term_bytes(t, dimensions) for t in terms), dtype=np.int8)
    vector = weights @ directions.reshape(len(terms), dimensions).astype(np.float64)
    norm = float(np.linalg.norm(vector))
    return (vector / norm).tolist() if norm else normalise(vector.tolist())


@functools.lru_cache(maxsize=65536)
def _term_bytes(term: str, dimensions: int) -> bytes:
    return hashlib.shake_256(term.encode()).digest(dimensions)


def normalise(vector: Sequence[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    if norm == 0.0:
        # Opposite features can cancel out; a fixed unit vector keeps the promise of unit length.
        return [1.0] + [0.0] * (len(vector) - 1)
    return [x / norm for x in vector]


def truncate(vector: Sequence[float], dimensions: int) -> list[float]:
    """Shorten to `dimensions` and re-normalise, as text-embedding-3 models do for the `dimensions` parameter."""
    return normalise(vector[:dimensions])


def encode_base64(vector: Sequence[float]) -> str:
    """The `encoding_format: base64` form: little-endian float32 values, base64-encoded."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
