"""Azure AI Content Safety's two text routes, shaped after the published REST API (api-version 2024-09-01),
with deterministic verdicts for tests:

    POST /contentsafety/text:shieldPrompt  {"userPrompt", "documents"} -> {"userPromptAnalysis": {"attackDetected"},
                                                                           "documentsAnalysis": [{"attackDetected"}]}
    POST /contentsafety/text:analyze       {"text", "categories", "outputType"} -> {"blocklistsMatch": [],
                                                                   "categoriesAnalysis": [{"category", "severity"}]}

Trigger words decide the verdicts: `[[jailbreak]]` (or "ignore all previous
instructions") is a user-prompt attack; `[[hate:4]]`, `[[sexual:2]]`,
`[[violence:6]]`, `[[selfharm:4]]` set a category's severity (0 otherwise);
`[[content_safety_down]]` answers 503, so a test can make the service fail
for one request. The key is the simulator's own, sent as
`Ocp-Apim-Subscription-Key`; a bearer token is accepted as Entra's would be.
"""

from __future__ import annotations

import json
import re
import secrets

from aiohttp import web

from simulator import errors

API_VERSION = "2024-09-01"
CATEGORIES = ("Hate", "SelfHarm", "Sexual", "Violence")
JAILBREAK_TRIGGERS = ("[[jailbreak]]", "ignore all previous instructions")
DOWN_TRIGGER = "[[content_safety_down]]"
_SEVERITY = re.compile(r"\[\[(hate|sexual|violence|selfharm):([0-7])\]\]", re.IGNORECASE)
_MAX_CHARS = 10_000
_NAMES = {c.lower(): c for c in CATEGORIES}


def _jailbreak(text: str) -> bool:
    lowered = text.lower()
    return any(t in lowered for t in JAILBREAK_TRIGGERS)


def severities(text: str) -> dict[str, int]:
    found = dict.fromkeys(CATEGORIES, 0)
    for name, level in _SEVERITY.findall(text):
        category = _NAMES[name.lower()]
        found[category] = max(found[category], int(level))
    return found


class ContentSafety:
    def __init__(self, api_key: str | None) -> None:
        self._key = api_key.encode() if api_key is not None else None
        self.calls: list[tuple[str, object]] = []  # (route, body): what the gateway sent, for tests

    def _refused(self, request: web.Request) -> web.Response | None:
        if request.query.get("api-version") != API_VERSION:
            return errors.envelope(400, "InvalidRequestBody", f"api-version must be {API_VERSION}.")
        if request.headers.get("Authorization", "").startswith("Bearer "):
            return None
        key = request.headers.get("Ocp-Apim-Subscription-Key", "").encode()
        if self._key is not None and not secrets.compare_digest(key, self._key):
            return errors.envelope(401, "401", "Access denied due to invalid subscription key.")
        return None

    async def _body(self, request: web.Request, route: str) -> dict[str, object] | web.Response:
        try:
            body = json.loads(await request.read())
        except ValueError:
            return errors.envelope(400, "InvalidRequestBody", "The request body is not valid JSON.")
        if not isinstance(body, dict):
            return errors.envelope(400, "InvalidRequestBody", "The request body must be an object.")
        self.calls.append((route, body))
        if DOWN_TRIGGER in json.dumps(body):
            return errors.envelope(503, "ServiceUnavailable", "The service is temporarily unavailable.")
        return body

    async def shield_prompt(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        body = await self._body(request, "shieldPrompt")
        if isinstance(body, web.Response):
            return body
        prompt, documents = body.get("userPrompt", ""), body.get("documents", [])
        if not isinstance(prompt, str) or not isinstance(documents, list) or len(prompt) > _MAX_CHARS:
            return errors.envelope(400, "InvalidRequestBody", "userPrompt: a string of at most 10,000 characters.")
        return web.json_response(
            {
                "userPromptAnalysis": {"attackDetected": _jailbreak(prompt)},
                "documentsAnalysis": [{"attackDetected": _jailbreak(str(d))} for d in documents],
            }
        )

    async def analyze(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        body = await self._body(request, "analyze")
        if isinstance(body, web.Response):
            return body
        text = body.get("text")
        if not isinstance(text, str) or not text or len(text) > _MAX_CHARS:
            return errors.envelope(400, "InvalidRequestBody", "text: a string of 1 to 10,000 characters.")
        asked = body.get("categories") or list(CATEGORIES)
        found = severities(text)
        eight = body.get("outputType") == "EightSeverityLevels"
        analysis = [
            # Four levels report 0, 2, 4 or 6: the trigger's level rounded down to even.
            {"category": c, "severity": found[c] if eight else found[c] - found[c] % 2}
            for c in CATEGORIES
            if c in asked
        ]
        return web.json_response({"blocklistsMatch": [], "categoriesAnalysis": analysis})


def add_content_safety_routes(app: web.Application, api_key: str | None) -> ContentSafety:
    service = ContentSafety(api_key)
    app.router.add_post("/contentsafety/text:shieldPrompt", service.shield_prompt)
    app.router.add_post("/contentsafety/text:analyze", service.analyze)
    return service
