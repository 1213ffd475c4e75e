"""Logging with the request id on every line, and request ids themselves.

The id comes from the caller's `x-request-id` (or `x-ms-client-request-id`)
when it is sane, else a fresh one; it is put in a context variable so every
log record written while serving that request carries it.
"""

from __future__ import annotations

import contextvars
import logging
import re
import uuid
from collections.abc import Mapping

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")


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


def configure(level: str = "INFO") -> None:
    """Local host logging: one line per record, with the request id. Azure Functions has its own handlers."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s", "%H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("azure", "uvicorn.access", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def install_filter() -> None:
    """Add the request id to records on whatever handlers the host set up (Azure Functions)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RequestIdFilter) for f in handler.filters):
            handler.addFilter(RequestIdFilter())
