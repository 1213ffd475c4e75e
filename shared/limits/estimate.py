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
    """Prompt tokens counted offline, plus the completion budget (`max_tokens` or the default)."""
    from shared import tokens  # noqa: PLC0415 - the tokenizer loads on the first limited request

    if call.operation is Operation.EMBEDDINGS:
        return Estimate(tokens.estimate_embeddings_input(call.body), 0)
    return Estimate(
        tokens.estimate_chat_prompt(call.body), tokens.completion_budget(call.body, default_completion_tokens)
    )
