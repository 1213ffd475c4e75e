"""Logging with the request id on every line, request ids themselves, and log lines no caller can forge.

The id comes from the caller's `x-request-id` (or `x-ms-client-request-id`)
when it is sane, else a fresh one; it is put in a context variable so every
log record written while serving that request carries it.

Values that came from a caller (a model name, a path, a header) are passed
through `clip` before they are logged or echoed in an error message: one
line, at most `LOG_VALUE_CHARS` characters. `SafeRecords`, on every handler,
is the net under that: each record becomes exactly one line, either a JSON
object (`GATEWAY_LOG_FORMAT=json`, the default in Azure, where log search
parses it) or text with control characters escaped (locally), so a newline
in a value can never start a record of its own.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import traceback
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")

LOG_VALUE_CHARS = 200
# A whole record's ceiling (prompts, when logged, are cut at 4 KiB before this): no record is a megabyte.
RECORD_CHARS = 16_384
# Everything that can end a line in some reader, and lone surrogates, which no encoder writes.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char) or f"\\u{ord(char):04x}"


def escape(text: str) -> str:
    """`text` on one line: control characters, line separators and lone surrogates written as escapes."""
    return _UNSAFE.sub(_escape, text)


def clip(value: object, limit: int = LOG_VALUE_CHARS) -> str:
    """A caller's value as it may appear in a log line or an error message: escaped, one line, `limit` chars at most."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        text = f"{text[:limit]}...({len(text)} chars)"
    return escape(text)


def request_id_from(headers: Mapping[str, str]) -> str:
    for name in ("x-request-id", "x-ms-client-request-id"):
        value = headers.get(name, "")
        if _SANE_ID.match(value):
            return value
    return uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


def _cap(text: str) -> str:
    return text if len(text) <= RECORD_CHARS else f"{text[:RECORD_CHARS]}...({len(text)} chars)"


class SafeRecords(logging.Filter):
    """Make each record one safe line, whichever handler writes it (ours locally, the Functions worker's in Azure).

    The message is rendered here, once: as a JSON object (`as_json`) or as escaped text. A traceback
    becomes part of it (a JSON field, or escaped text), so no handler appends lines of its own.
    """

    def __init__(self, *, as_json: bool) -> None:
        super().__init__()
        self.as_json = as_json

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = record.request_id = request_id_var.get()
        if getattr(record, "_gateway_safe", False):
            return True  # another handler already rendered it
        try:
            message = record.getMessage()
        except (TypeError, ValueError) as exc:  # a bad format string must not lose the record
            message = f"{record.msg!r} (unformattable: {exc})"
        error = None
        if record.exc_info:
            error = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        elif record.exc_text:
            error = record.exc_text
        if self.as_json:
            fields = {
                "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
                "level": record.levelname,
                "logger": record.name,
                "request_id": request_id,
                "message": _cap(message),
            }
            if error:
                fields["exception"] = _cap(error)
            # ensure_ascii: surrogates and line separators leave as escapes, so the object is one line.
            record.msg = json.dumps(fields, ensure_ascii=True)
        else:
            record.msg = escape(_cap(message + (f" | {error}" if error else "")))
        record.args = None
        record.exc_info = None
        record.exc_text = None
        record._gateway_safe = True
        return True


def wants_json(setting: str | None, *, running_in_azure: bool) -> bool:
    """GATEWAY_LOG_FORMAT: `json`, `text`, or `auto` (JSON in Azure, text locally)."""
    choice = (setting or "auto").strip().lower()
    return choice == "json" or (choice == "auto" and running_in_azure)


def configure(level: str = "INFO", *, as_json: bool = False) -> None:
    """Local host logging: one line per record, with the request id. Azure Functions has its own handlers."""
    handler = logging.StreamHandler()
    handler.addFilter(SafeRecords(as_json=as_json))
    handler.setFormatter(logging.Formatter("%(message)s" if as_json else TEXT_FORMAT, "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("azure", "uvicorn.access", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def install_filter(*, as_json: bool = True) -> None:
    """Make the records on whatever handlers the host set up (Azure Functions) safe, one line, with the request id."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, SafeRecords | RequestIdFilter) for f in handler.filters):
            handler.addFilter(SafeRecords(as_json=as_json))
