"""Usage that comes after the call that caused it: completed batches and background responses, metered once each.

A background response (`background: true`) answers its create while queued,
with no usage; the first read (`GET /responses/{id}`) that finds it done
claims it in the affinity store (one instance wins) and is charged its
usage, rate and quota limits included. A background response that was
streamed is charged by its stream and claimed when the stream opens.

Azure's batch object has no usage field (neither its spec nor the service
reports one); each output line carries the chat completion it answered,
with its `usage`. So the first time any instance relays a completed batch
(a retrieve the caller polls with), it claims the batch in the affinity
store (one instance wins, across all of them), reads the output file from
the batch's backend in the background and meters the sum as one request of
operation `batches.usage` for the batch's subscription: the ledger, `/usage`
and metrics count it; the rate and quota limits are not reserved for it.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from shared.models import DEFAULT_API_VERSION, Caller, Usage
from shared.outcomes import Outcome, RequestRecord
from shared.proxy import BackendCall, ProxyResult
from shared.routing import ACCOUNT

if TYPE_CHECKING:
    from shared.gateway import Gateway

log = logging.getLogger("gateway.batches")

OPERATION = "batches.usage"
_DONE = frozenset({"completed", "incomplete", "failed"})


def _marker(object_id: str) -> str:
    return f"usage-{object_id}"


async def claim_background(gw: Gateway, caller: Caller, response_id: str, backend: str) -> None:
    """A background response whose usage this call already meters: later reads charge nothing."""
    await gw.affinity.claim(caller, _marker(response_id), backend)


async def background_usage(gw: Gateway, caller: Caller, answer: Mapping[str, Any] | None, backend: str) -> Usage | None:
    """The usage to charge a read of a background response: its usage the first time it is seen done, else none."""
    if answer is None or answer.get("background") is not True or answer.get("status") not in _DONE:
        return None
    usage, response_id = answer.get("usage"), answer.get("id")
    if not isinstance(usage, dict) or not isinstance(response_id, str):
        return None
    if not await gw.affinity.claim(caller, _marker(response_id), backend):
        return None
    return Usage.from_json(usage)


def completed_output(answer: Mapping[str, Any] | None) -> tuple[str, str] | None:
    """(batch id, output file id) of a completed batch answer, else None."""
    if answer is None or answer.get("object") != "batch" or answer.get("status") != "completed":
        return None
    batch_id, output = answer.get("id"), answer.get("output_file_id")
    if isinstance(batch_id, str) and batch_id and isinstance(output, str) and output:
        return batch_id, output
    return None


def output_usage(content: bytes) -> Usage:
    """The sum of every output line's usage (lines that are not JSON, or carry none, count nothing)."""
    prompt = completion = cached = reasoning = 0
    for line in content.splitlines():
        try:
            parsed = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        response = parsed.get("response") if isinstance(parsed, dict) else None
        body = response.get("body") if isinstance(response, dict) else None
        usage = body.get("usage") if isinstance(body, dict) else None
        if isinstance(usage, dict):
            one = Usage.from_json(usage)
            prompt += one.prompt_tokens
            completion += one.completion_tokens
            cached += one.cached_prompt_tokens
            reasoning += one.reasoning_tokens
    return Usage(prompt, completion, cached, reasoning)


async def meter_when_completed(
    gw: Gateway, caller: Caller, answer: Mapping[str, Any] | None, backend: str, *, v1: bool
) -> None:
    """Claim a newly completed batch and meter its output file in the background (once, across instances)."""
    found = completed_output(answer)
    if found is None:
        return
    batch_id, output = found
    if await gw.affinity.claim(caller, _marker(batch_id), backend):
        gw.spawn(_meter(gw, caller, batch_id, output, backend, v1=v1))


async def _meter(gw: Gateway, caller: Caller, batch_id: str, output: str, backend: str, *, v1: bool) -> None:
    request_id = secrets.token_hex(8)
    path = f"files/{output}/content"
    result = await gw.proxy.forward(
        BackendCall(
            deployment=ACCOUNT,
            operation="files.content",
            body=b"",
            stream=False,
            strip_usage_chunk=False,
            request_id=request_id,
            api_version=DEFAULT_API_VERSION,
            client_headers={},
            method="GET",
            upstream_path=f"v1/{path}" if v1 else path,
            params={} if v1 else {"api-version": DEFAULT_API_VERSION},
            content_type="",
            pinned=backend,
        )
    )
    if not isinstance(result, ProxyResult) or result.status != 200:
        log.warning("usage of batch %s not metered: its output file could not be read", batch_id)
        return
    usage = output_usage(result.body)
    record = RequestRecord(request_id, operation=OPERATION, status=200, outcome=Outcome.SUCCESS, caller=caller)
    record.backend, record.usage = backend, usage
    await gw.meter.finish(record, None)
    log.info("batch %s metered: %d + %d tokens", batch_id, usage.prompt_tokens, usage.completion_tokens)
