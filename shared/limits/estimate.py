"""What a call is expected to use before it is sent: the prompt counted offline plus its completion budget."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.models import Operation

if TYPE_CHECKING:
    from shared.api import ApiCall


@dataclass(frozen=True, slots=True)
class Estimate:
    prompt: int
    completion: int

    @property
    def total(self) -> int:
        return self.prompt + self.completion


Estimator = Callable[["ApiCall", int], Estimate]


def estimate_call(call: ApiCall, default_completion_tokens: int) -> Estimate:
    """Prompt tokens counted offline, plus the completion budget (`max_tokens`, `max_output_tokens` or the default)."""
    from shared import tokens  # noqa: PLC0415 - the tokenizer loads on the first limited request

    body, operation = call.body, call.operation
    if operation is Operation.EMBEDDINGS:
        return Estimate(tokens.estimate_embeddings_input(body), 0)
    if operation is Operation.CHAT:
        return Estimate(tokens.estimate_chat_prompt(body), tokens.completion_budget(body, default_completion_tokens))
    if operation is Operation.COMPLETIONS:
        prompts = body.get("prompt")
        count = len(prompts) if isinstance(prompts, list) and prompts and isinstance(prompts[0], str) else 1
        budget = tokens.completion_budget(body, default_completion_tokens) * count
        return Estimate(tokens.estimate_completions_prompt(body), budget)
    if operation is Operation.RESPONSES_CREATE:
        return Estimate(tokens.estimate_responses_input(body), tokens.output_budget(body, default_completion_tokens))
    # Images, audio, files and batches: counted as requests; tokens only where the answer reports them.
    return Estimate(0, 0)
