"""Limits per end user: who the end user is (the counter key a subscription chooses), and their own limit records.

A subscription with `user_limits` names its end users by the Entra token's
`oid`, by a header its app sends (`x-user-id`, or another it names: only a
subscription that chose the header reads it), or by the client address
(x-forwarded-for's first hop, which Azure's front end sets, else the TCP
peer). Each end user gets counter records of their own beside the
subscription's, keyed by subscription and a hash of the user (values can be
anything an app sends, so they never become row keys as they are), and the
same leases, windows and headers apply. A request whose end user cannot be
named (a key caller under `oid`, no header, no address) counts against one
shared record, ANONYMOUS: leaving the header out never escapes the limits.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

from shared.errors import BadRequest
from shared.models import Caller, GatewayRequest, Limits, UserKey

ANONYMOUS = "-"
MAX_USER_LENGTH = 256
HEADER_PREFIX = "x-ratelimit-"
USER_HEADER_PREFIX = "x-ratelimit-user-"


def client_address(request: GatewayRequest) -> str | None:
    forwarded = request.headers.get("x-forwarded-for", "")
    first = forwarded.split(",", 1)[0].strip()
    if first:
        # Azure's front end writes "ip:port" for IPv4; an IPv6 address is bracketed when it carries a port.
        if first.startswith("["):
            return first[1:].split("]", 1)[0]
        return first.rsplit(":", 1)[0] if first.count(":") == 1 else first
    return request.client_ip


def with_end_user(caller: Caller, request: GatewayRequest) -> Caller:
    """The caller with its end user named, when its subscription has per-user limits."""
    user_limits = caller.user_limits
    if user_limits is None:
        return caller
    if user_limits.key is UserKey.OID:
        user = caller.principal
    elif user_limits.key is UserKey.HEADER:
        user = request.headers.get(user_limits.header, "").strip() or None
        if user is not None and len(user) > MAX_USER_LENGTH:
            raise BadRequest(
                f"'{user_limits.header}' is longer than {MAX_USER_LENGTH} characters.", param=user_limits.header
            )
    else:
        user = client_address(request)
    return replace(caller, end_user=user or ANONYMOUS)


def user_caller(caller: Caller) -> Caller | None:
    """The end user as a caller of its own to the limiter: its own records, the subscription's user limits."""
    if caller.user_limits is None or caller.end_user is None:
        return None
    digest = hashlib.sha256(f"{caller.subscription_id}\x00{caller.end_user}".encode()).hexdigest()[:32]
    limits: Limits = caller.user_limits.limits
    return Caller(
        subscription_id=f"{caller.subscription_id}|u-{digest}",
        subscription_name=caller.subscription_name,
        limits=limits,
    )


def user_headers(headers: dict[str, str]) -> dict[str, str]:
    """An end user's x-ratelimit-* headers as x-ratelimit-user-*, beside the subscription's."""
    return {USER_HEADER_PREFIX + k[len(HEADER_PREFIX) :]: v for k, v in headers.items() if k.startswith(HEADER_PREFIX)}
