"""Who may use the admin API: the shared `x-admin-key`, or, with Entra ID configured, a token carrying an app role.

`GATEWAY_ENTRA_ADMIN_ROLE` (Gateway.Admin) may do everything;
`GATEWAY_ENTRA_READER_ROLE` (Gateway.Reader) only the GET views.
`GATEWAY_ADMIN_KEY_ENABLED=false` switches the shared key off, leaving roles
only. The key is compared in constant time; a token is validated exactly as
a caller's (signature, issuer, audience, lifetime). The answer is the
`Actor`, which the audit trail records.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.auth import bearer_of
from shared.entra.tokens import identify, looks_like_jwt
from shared.errors import Forbidden, NotFound, Unauthorized
from shared.models import GatewayRequest

if TYPE_CHECKING:
    from shared.config import Settings
    from shared.entra.tokens import TokenValidator

log = logging.getLogger("gateway.admin")

ADMIN_KEY_ACTOR = "admin-key"
_READ_METHODS = ("GET", "HEAD")


@dataclass(frozen=True, slots=True)
class Actor:
    """Who made an admin call: the shared key, or an Entra principal with its role."""

    id: str  # "admin-key", or "entra:<oid>"
    may_write: bool = True
    name: str | None = None
    app_id: str | None = None


def require_admin(settings: Settings, request: GatewayRequest) -> None:
    """The shared key only (routes outside the admin API that take it); the admin API is off (404) without one."""
    expected = settings.admin_key
    if not expected:
        raise NotFound("The admin API is disabled (GATEWAY_ADMIN_KEY is not set).", code="admin_disabled")
    if not settings.admin_key_enabled:
        raise Unauthorized(
            "The admin key is switched off (GATEWAY_ADMIN_KEY_ENABLED=false).", code="admin_key_disabled"
        )
    given = request.headers.get("x-admin-key", "")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthorized("Access denied: missing or wrong x-admin-key.", code="invalid_admin_key")


async def authorize(settings: Settings, tokens: TokenValidator | None, request: GatewayRequest) -> Actor:
    """Every admin API route's check: a role token when Entra is on and one is sent, else the shared key."""
    bearer = bearer_of(request.headers)
    if tokens is not None and bearer is not None and looks_like_jwt(bearer):
        return await _by_role(tokens, bearer, write=request.method not in _READ_METHODS)
    if tokens is None or "x-admin-key" in request.headers:
        if tokens is not None and not settings.admin_key:
            raise Unauthorized("The admin key is not set; use an Entra ID token with an admin role.")
        require_admin(settings, request)
        return Actor(ADMIN_KEY_ACTOR)
    raise Unauthorized(
        f"Access denied: send an Entra ID token with the {tokens.config.admin_role} or "
        f"{tokens.config.reader_role} app role"
        + (", or the x-admin-key header." if settings.admin_key and settings.admin_key_enabled else "."),
        code="admin_credentials_required",
    )


async def _by_role(tokens: TokenValidator, bearer: str, *, write: bool) -> Actor:
    identity = await identify(tokens, bearer, purpose="admin token")
    config = tokens.config
    if config.admin_role in identity.roles:
        return Actor(f"entra:{identity.oid}", True, identity.name, identity.app_id)
    if config.reader_role in identity.roles and not write:
        return Actor(f"entra:{identity.oid}", False, identity.name, identity.app_id)
    log.warning("admin token refused: oid %s lacks the %s role", identity.oid, config.admin_role)
    wanted = config.admin_role if write else f"{config.admin_role} or {config.reader_role}"
    raise Forbidden(f"This token lacks the app role {wanted}.", code="admin_role_required")
