"""An optional last check of a semantic candidate: ask a small chat deployment of the pool, same or different.

Off by default (`GATEWAY_CACHE.judge` names the deployment). It runs only for candidates every local check passed,
so at most once per semantic hit that would otherwise be served. One request, `max_tokens` 1 and temperature 0,
through the gateway's proxy (routing, failover and circuit breakers as for chat), under its own timeout: the
answer "yes" lets the candidate be served; "no", anything else, an error or a timeout is a miss, never a hit. Its
tokens are the gateway's cost, counted in `JudgeStats` (and so in the cache's stats), never in the caller's usage:
the call does not go through the caller's pipeline.

Verdicts are memoised per pair of prompts (either order), so a popular near-miss costs one call; failures are not
memoised (the next lookup asks again).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.models import DEFAULT_API_VERSION
from shared.proxy import BackendCall, Exhausted

if TYPE_CHECKING:
    from shared.proxy import Proxy

log = logging.getLogger("gateway.cache.judge")

# The instruction: one word, so one token, and no room for the model to talk itself into "yes".
INSTRUCTION = (
    "You decide whether a stored answer to question A may be given as the answer to question B. Reply yes only if "
    "A and B ask exactly the same thing (any difference in a number, a negation, a name, a place, a part, a role, "
    "an action, a direction or an opposite makes them different). Reply with one word: yes or no."
)
MEMO_ENTRIES = 4096


@dataclass(slots=True)
class JudgeStats:
    calls: int = 0  # requests sent to the judge deployment
    memoised: int = 0  # verdicts answered from the memo, no call
    failures: int = 0  # errors, timeouts and unreadable answers: each a miss
    prompt_tokens: int = 0  # the gateway's own cost
    completion_tokens: int = 0


class Judge:
    def __init__(self, proxy: Proxy, deployment: str, *, timeout_seconds: float) -> None:
        self.deployment = deployment
        self.timeout_seconds = timeout_seconds
        self.stats = JudgeStats()
        self._proxy = proxy
        self._memo: OrderedDict[tuple[str, str], bool] = OrderedDict()

    async def same(self, new: str, stored: str) -> bool | None:
        """True: serve the stored answer; False: a different question; None: the judge could not say (a miss)."""
        key = (new, stored) if new <= stored else (stored, new)
        if key in self._memo:
            self._memo.move_to_end(key)
            self.stats.memoised += 1
            return self._memo[key]
        try:
            async with asyncio.timeout(self.timeout_seconds):
                verdict = await self._ask(stored, new)
        except TimeoutError:
            verdict = None
            log.warning("cache judge %s timed out after %.1f s", self.deployment, self.timeout_seconds)
        if verdict is None:
            self.stats.failures += 1
            return None
        self._memo[key] = verdict
        if len(self._memo) > MEMO_ENTRIES:
            self._memo.popitem(last=False)
        return verdict

    async def _ask(self, stored: str, new: str) -> bool | None:
        body = {
            "messages": [
                {"role": "system", "content": INSTRUCTION},
                {"role": "user", "content": f"A: {stored}\nB: {new}"},
            ],
            "max_tokens": 1,
            "temperature": 0,
        }
        call = BackendCall(
            deployment=self.deployment,
            operation="chat/completions",
            body=json.dumps(body).encode(),
            stream=False,
            strip_usage_chunk=False,
            request_id=f"cache-judge-{uuid.uuid4().hex[:16]}",
            api_version=DEFAULT_API_VERSION,
            client_headers={},
        )
        self.stats.calls += 1
        result = await self._proxy.forward(call)
        if isinstance(result, Exhausted):
            log.warning("cache judge %s unavailable: %s", self.deployment, result.error.code)
            return None
        if result.status != 200:
            log.warning("cache judge %s answered %d", self.deployment, result.status)
            return None
        try:
            answer = json.loads(result.body)
            usage = answer.get("usage") or {}
            self.stats.prompt_tokens += int(usage.get("prompt_tokens", 0))
            self.stats.completion_tokens += int(usage.get("completion_tokens", 0))
            word = str(answer["choices"][0]["message"]["content"] or "").strip().strip(".!\"'").lower()
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            log.warning("cache judge %s: unreadable answer", self.deployment)
            return None
        if word in ("yes", "no"):
            return word == "yes"
        log.warning("cache judge %s answered neither yes nor no", self.deployment)
        return None
