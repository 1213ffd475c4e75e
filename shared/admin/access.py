"""Who may use the admin API: the `x-admin-key` header, compared in constant time."""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from shared.errors import NotFound, Unauthorized
from shared.models import GatewayRequest

if TYPE_CHECKING:
    from shared.config import Settings


def require_admin(settings: Settings, request: GatewayRequest) -> None:
    """Every admin route's check; the admin API is off (404) when no admin key is set."""
    expected = settings.admin_key
    if not expected:
        raise NotFound("The admin API is disabled (GATEWAY_ADMIN_KEY is not set).", code="admin_disabled")
    given = request.headers.get("x-admin-key", "")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthorized("Access denied: missing or wrong x-admin-key.", code="invalid_admin_key")
