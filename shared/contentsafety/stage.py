"""The content-safety stage: ask Azure AI Content Safety about a prompt before any backend sees it.

Two calls, made together: Prompt Shields (`text:shieldPrompt`, user-prompt
attacks) on the user's text, and text analysis (`text:analyze`, Hate, Sexual,
Violence, SelfHarm) on every message's text, in 10,000-character pieces. A
category at or above its threshold, or a detected attack, raises
`ContentFiltered` (400, code `content_filter`, the verdict in the envelope's
`innererror.content_filter_result`, as Azure OpenAI answers a filtered prompt).
When the service cannot answer (refused, failed, timed out, unreadable), the
configured rule decides: fail open lets the request through, fail closed
answers 503 `content_safety_unavailable`. Either way it is counted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from shared.contentsafety.config import ContentSafetyConfig
from shared.errors import ContentFiltered, GatewayException, ServiceUnavailable

if TYPE_CHECKING:
    from shared.backendauth import BackendCredential
    from shared.httpsession import SessionProvider

log = logging.getLogger("gateway.contentsafety")

API_VERSION = "2024-09-01"
MAX_CHARS = 10_000  # per call, for both routes
_KEYS = {"Hate": "hate", "Sexual": "sexual", "Violence": "violence", "SelfHarm": "self_harm"}


class Unavailable(GatewayException):
    """Content Safety did not give a usable answer."""


def _severity_name(level: int) -> str:
    if level <= 0:
        return "safe"
    return "low" if level <= 2 else "medium" if level <= 4 else "high"


def _texts(content: Any) -> list[str]:
    """The text of a message's content: a string, or the text parts of a list."""
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return []


def prompt_texts(body: Mapping[str, Any]) -> tuple[str, str]:
    """(every text of the prompt, the user's text): chat messages, or an `input` string or list of strings."""
    everything: list[str] = []
    user: list[str] = []
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict):
                texts = _texts(message.get("content"))
                everything += texts
                if message.get("role") == "user":
                    user += texts
    raw = body.get("input")
    if isinstance(raw, str):
        everything.append(raw)
        user.append(raw)
    elif isinstance(raw, list):
        for item in raw:
            texts = [item] if isinstance(item, str) else _texts(item.get("content")) if isinstance(item, dict) else []
            everything += texts
            user += texts
    return "\n".join(t for t in everything if t), "\n".join(t for t in user if t)


class ContentSafety:
    def __init__(
        self,
        config: ContentSafetyConfig,
        session: SessionProvider,
        *,
        credential: BackendCredential | None = None,
        on_result: Callable[[str, str], None] | None = None,
    ) -> None:
        self.config = config
        self._session = session
        self._credential = credential
        self._on_result = on_result
        self.counts = {"allowed": 0, "blocked": 0, "unavailable_open": 0, "unavailable_closed": 0}

    def applies(self, subscription_id: str, deployment: str) -> bool:
        return self.config.applies(subscription_id, deployment)

    async def check(self, deployment: str, body: Mapping[str, Any]) -> None:
        """Return if the prompt may go on; raise `ContentFiltered`, or `ServiceUnavailable` when failing closed."""
        everything, user = prompt_texts(body)
        if not everything:
            return  # nothing to judge (token-id input, empty messages): the backend validates the rest
        try:
            result = await asyncio.wait_for(self._verdict(everything, user), self.config.timeout_seconds)
        except (Unavailable, TimeoutError) as exc:
            reason = str(exc) or "timed out"
            if self.config.fail_open:
                self._count("unavailable_open", deployment)
                log.warning("content safety unavailable (%s): request let through (fail open)", reason)
                return
            self._count("unavailable_closed", deployment)
            log.warning("content safety unavailable (%s): request refused (fail closed)", reason)
            raise ServiceUnavailable(
                "The content safety service is unavailable; the request was not sent.",
                code="content_safety_unavailable",
            ) from None
        if any(isinstance(v, dict) and v.get("filtered") for v in result.values()):
            self._count("blocked", deployment)
            raise ContentFiltered(
                "The response was filtered due to the prompt triggering the content management policy. "
                "Please modify your prompt and retry.",
                result,
            )
        self._count("allowed", deployment)

    def _count(self, result: str, deployment: str) -> None:
        self.counts[result] += 1
        if self._on_result is not None:
            self._on_result(result, deployment)

    async def _verdict(self, everything: str, user: str) -> dict[str, Any]:
        calls: list[Any] = []
        if self.config.thresholds:
            pieces = [everything[i : i + MAX_CHARS] for i in range(0, len(everything), MAX_CHARS)]
            # The newest text is at the end: past the cap, the oldest pieces are the ones left unread.
            for piece in pieces[-self.config.max_chunks :]:
                calls.append(
                    self._post(
                        "text:analyze",
                        {
                            "text": piece,
                            "categories": sorted(self.config.thresholds),
                            "outputType": "FourSeverityLevels",
                        },
                    )
                )
        shield_index = len(calls)
        if self.config.prompt_shields and user:
            calls.append(self._post("text:shieldPrompt", {"userPrompt": user[-MAX_CHARS:], "documents": []}))
        answers = await asyncio.gather(*calls)
        result: dict[str, Any] = {}
        worst: dict[str, int] = {}
        for answer in answers[:shield_index]:
            for item in answer.get("categoriesAnalysis") or ():
                if isinstance(item, dict) and item.get("category") in _KEYS:
                    level = item.get("severity")
                    if not isinstance(level, int):
                        raise Unavailable("text:analyze answered a severity that is not a number")
                    worst[item["category"]] = max(worst.get(item["category"], 0), level)
        for category, threshold in self.config.thresholds.items():
            level = worst.get(category, 0)
            result[_KEYS[category]] = {"filtered": level >= threshold, "severity": _severity_name(level)}
        if shield_index < len(answers):
            analysis = answers[shield_index].get("userPromptAnalysis")
            if not isinstance(analysis, dict) or not isinstance(analysis.get("attackDetected"), bool):
                raise Unavailable("text:shieldPrompt answered without userPromptAnalysis.attackDetected")
            detected = analysis["attackDetected"]
            result["jailbreak"] = {"filtered": detected, "detected": detected}
        return result

    async def _post(self, route: str, payload: dict[str, Any]) -> dict[str, Any]:
        import aiohttp  # noqa: PLC0415 - loaded with the session already

        # The worker's session leaves bodies compressed (the proxy relays them as they are): ask for none.
        headers = {"content-type": "application/json", "accept-encoding": "identity"}
        if self.config.api_key is not None:
            headers["Ocp-Apim-Subscription-Key"] = self.config.api_key
        elif self._credential is not None:
            try:
                headers.update(await self._credential.headers())
            except GatewayException as exc:
                raise Unavailable(f"no token: {exc}") from None
        url = f"{self.config.endpoint}/contentsafety/{route}?api-version={API_VERSION}"
        session = await self._session()
        try:
            async with session.post(url, json=payload, headers=headers) as response:
                if response.status != 200:
                    raise Unavailable(f"{route} answered {response.status}")
                answer = await response.json(content_type=None)
        except (aiohttp.ClientError, ValueError) as exc:
            raise Unavailable(f"{route}: {type(exc).__name__}") from None
        if not isinstance(answer, dict):
            raise Unavailable(f"{route} answered something other than an object")
        return answer
