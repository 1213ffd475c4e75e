"""GATEWAY_ENTRA_*: which tenant, audiences and issuers a token must name, and the app roles the gateway reads."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

LOGIN = "https://login.microsoftonline.com"
DEFAULT_ADMIN_ROLE = "Gateway.Admin"
DEFAULT_READER_ROLE = "Gateway.Reader"
CLOCK_SKEW_SECONDS = 60.0
_TENANT = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_ROLE = re.compile(r"^[A-Za-z0-9._:/-]{1,120}$")


@dataclass(frozen=True, slots=True)
class EntraConfig:
    tenant_id: str
    audiences: tuple[str, ...]  # the gateway's app ID URI and/or client id: v1 tokens carry the first, v2 the second
    issuers: tuple[str, ...]  # v1 (sts.windows.net) and v2 (login.microsoftonline.com/.../v2.0) by default
    jwks_url: str
    required_roles: tuple[str, ...] = ()  # a caller's token needs one of these in `roles` or `scp`; () none
    admin_role: str = DEFAULT_ADMIN_ROLE
    reader_role: str = DEFAULT_READER_ROLE
    leeway_seconds: float = CLOCK_SKEW_SECONDS


def _list(text: str | None) -> tuple[str, ...]:
    return tuple(item.strip() for item in (text or "").split(",") if item.strip())


def _https(url: str) -> bool:
    parts = urlsplit(url)
    # Plain http only on loopback: tests serve their signing keys there; anywhere else keys must not be spoofable.
    return parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost"))


def parse_entra_config(raw: Callable[[str], str | None], problems: list[str]) -> EntraConfig | None:
    """The Entra settings, or None when GATEWAY_ENTRA_TENANT_ID is unset (tokens are then treated as keys)."""
    tenant = raw("GATEWAY_ENTRA_TENANT_ID")
    audiences = _list(raw("GATEWAY_ENTRA_AUDIENCE"))
    if tenant is None:
        if audiences:
            problems.append("GATEWAY_ENTRA_AUDIENCE: set GATEWAY_ENTRA_TENANT_ID too (Entra ID is off without it)")
        return None
    if not _TENANT.match(tenant):
        problems.append(f"GATEWAY_ENTRA_TENANT_ID: a directory (tenant) id, a GUID (got {tenant!r})")
    if not audiences:
        problems.append(
            "GATEWAY_ENTRA_AUDIENCE: required with GATEWAY_ENTRA_TENANT_ID: the gateway's app ID URI "
            "(api://...) and/or its client id, comma-separated"
        )
    issuers = _list(raw("GATEWAY_ENTRA_ISSUER")) or (
        f"https://sts.windows.net/{tenant}/",
        f"{LOGIN}/{tenant}/v2.0",
    )
    jwks_url = raw("GATEWAY_ENTRA_JWKS_URL") or f"{LOGIN}/{tenant}/discovery/v2.0/keys"
    if not _https(jwks_url):
        problems.append(f"GATEWAY_ENTRA_JWKS_URL: an https:// URL (http only on 127.0.0.1), got {jwks_url!r}")
    roles = _list(raw("GATEWAY_ENTRA_REQUIRED_ROLES"))
    admin_role = raw("GATEWAY_ENTRA_ADMIN_ROLE") or DEFAULT_ADMIN_ROLE
    reader_role = raw("GATEWAY_ENTRA_READER_ROLE") or DEFAULT_READER_ROLE
    for name, value in (
        *(("GATEWAY_ENTRA_REQUIRED_ROLES", r) for r in roles),
        ("GATEWAY_ENTRA_ADMIN_ROLE", admin_role),
        ("GATEWAY_ENTRA_READER_ROLE", reader_role),
    ):
        if not _ROLE.match(value):
            problems.append(f"{name}: {value!r} is not an app role value")
    return EntraConfig(
        tenant_id=tenant.lower(),
        audiences=audiences,
        issuers=issuers,
        jwks_url=jwks_url,
        required_roles=roles,
        admin_role=admin_role,
        reader_role=reader_role,
    )
