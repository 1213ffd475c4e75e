"""Which answers may be stored: only one complete, unfiltered choice, under the size limit, tool calls if allowed.

The same rules judge a backend's unary answer and a streamed one reassembled
by `StreamRecorder`; each "no" is a reason, counted in `CacheStats.not_stored`.
"""

from __future__ import annotations

from typing import Any

MAX_RESPONSE_BYTES = 1024 * 1024  # well under a Cosmos DB item's 2 MB


def unstorable(answer: Any, size: int, *, cache_tool_calls: bool) -> str | None:
    """Why a chat.completion of `size` bytes must not be stored, or None when it may be."""
    if size > MAX_RESPONSE_BYTES:
        return "too large"
    if not isinstance(answer, dict) or not isinstance(answer.get("choices"), list):
        return "not a chat completion"
    choices = answer["choices"]
    if len(choices) != 1 or not isinstance(choices[0], dict):
        return "not one choice"
    choice = choices[0]
    message = choice.get("message")
    message = message if isinstance(message, dict) else {}
    finish = choice.get("finish_reason")
    calls_tools = bool(message.get("tool_calls") or message.get("function_call"))
    calls_tools = calls_tools or finish in ("tool_calls", "function_call")
    if calls_tools and not cache_tool_calls:
        return "tool call"
    if finish != "stop" and not (calls_tools and finish in ("tool_calls", "function_call")):
        return f"finish_reason {finish}"
    if message.get("refusal"):
        return "refusal"
    if filtered(choice.get("content_filter_results")) or any(
        isinstance(p, dict) and filtered(p.get("content_filter_results"))
        for p in answer.get("prompt_filter_results") or []
    ):
        return "content filtered"
    return None


def filtered(results: Any) -> bool:
    """Azure's content-filter annotations: any category marked filtered."""
    if not isinstance(results, dict):
        return False
    return any(isinstance(v, dict) and v.get("filtered") is True for v in results.values())
