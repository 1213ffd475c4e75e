"""Azure's content-filter annotations: the results on each choice, the `prompt_filter_results`, and a refusal's details.

Azure OpenAI runs every prompt and completion through its filters and says
so in the answer: `prompt_filter_results` (one entry per prompt) and
`content_filter_results` on each choice. The simulator's filter passes
everything as "safe" except a prompt carrying `CONTENT_FILTER_TRIGGER`,
which is refused the way Azure refuses a violent prompt.
"""

from __future__ import annotations

_SEVERITY_CATEGORIES = ("hate", "self_harm", "sexual", "violence")


def _severity(filtered_category: str | None = None) -> dict[str, dict[str, object]]:
    return {
        name: {"filtered": name == filtered_category, "severity": "high" if name == filtered_category else "safe"}
        for name in _SEVERITY_CATEGORIES
    }


def prompt_results(*, filtered_category: str | None = None) -> dict[str, object]:
    """One prompt's `content_filter_results` (severity categories plus jailbreak detection)."""
    return {**_severity(filtered_category), "jailbreak": {"filtered": False, "detected": False}}


def prompt_filter_results() -> list[dict[str, object]]:
    """The `prompt_filter_results` of a request whose prompt passed."""
    return [{"prompt_index": 0, "content_filter_results": prompt_results()}]


def choice_results() -> dict[str, object]:
    """A passed completion's `content_filter_results` (severity categories plus protected material)."""
    return {
        **_severity(),
        "protected_material_code": {"filtered": False, "detected": False},
        "protected_material_text": {"filtered": False, "detected": False},
    }


def refused_prompt_result() -> dict[str, object]:
    """The `content_filter_result` inside the 400 of a refused prompt (Azure names it in the singular there)."""
    return prompt_results(filtered_category="violence")


def image_results() -> dict[str, object]:
    """The `content_filter_results` of a generated image (severity categories only)."""
    return dict(_severity())
