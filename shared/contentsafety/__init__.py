"""Content safety before the model: Azure AI Content Safety's Prompt Shields and text analysis, an optional stage.

config.py   GATEWAY_CONTENT_SAFETY, parsed into `ContentSafetyConfig`
stage.py    `ContentSafety.check`: the two calls, the verdict, and the fail-open / fail-closed rule
"""
