"""The audit log of prompts and completions: one JSON Lines record per request, off unless a subscription asks.

    config.py    GATEWAY_PROMPT_LOG, parsed into `PromptLogConfig`
    redact.py    the patterns masked before anything is written (cards with a Luhn check, e-mail addresses, ...)
    transcript.py  a relayed stream's completion, assembled from the events as they pass
    log.py       `PromptLog`: the bounded queue, the batching writer and the look-up by request id

The pipeline marks a request for the log (its caller's subscription says so for
its deployment) and fills the record; the meter hands every finished record to
`PromptLog.add`, which never waits and never raises.
"""
