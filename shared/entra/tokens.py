"""Validating one Entra ID access token: the signature, who issued it, for whom, when, and with which roles.

Only RS256 is accepted, whatever the token's header asks for: `none` and
HS256 (an attacker signing with the published public key as an HMAC secret)
are refused before any key is looked at. The issuer must be the tenant's (v1
`https://sts.windows.net/{tid}/` or v2 `.../{tid}/v2.0`), the audience one of
the gateway's, and `exp` / `nbf` hold within a minute of clock skew, read
from the injected clock. A refusal says why in `InvalidToken.reason` (for
the log); the token itself is never logged.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.entra.keys import KeysUnavailable, SigningKeys
from shared.errors import GatewayException, ServiceUnavailable, Unauthorized

if TYPE_CHECKING:
    from shared.clock import Clock
    from shared.entra.config import EntraConfig
    from shared.httpsession import SessionProvider

ALGORITHM = "RS256"
_JWT_SHAPE = re.compile(r"^eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")
MAX_TOKEN_LENGTH = 16_384


log = logging.getLogger("gateway.entra")


class InvalidToken(GatewayException):
    """A bearer token the gateway refuses (401); `reason` is for the log, never the caller's secret."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a valid token speaks for: the object id (`oid`) is what subscriptions list."""

    oid: str
    tenant_id: str
    app_id: str | None = None  # the calling app (`appid` v1, `azp` v2)
    name: str | None = None  # a user's display name or UPN, when the token carries one
    roles: frozenset[str] = frozenset()  # app roles (`roles`) and delegated scopes (`scp`)

    def has_any(self, wanted: tuple[str, ...] | frozenset[str]) -> bool:
        return not self.roles.isdisjoint(wanted)


def looks_like_jwt(value: str) -> bool:
    """A compact JWS (three base64url parts, a JSON header): never the shape of a subscription key."""
    return len(value) <= MAX_TOKEN_LENGTH and _JWT_SHAPE.match(value) is not None


class TokenValidator:
    def __init__(self, config: EntraConfig, session: SessionProvider, clock: Clock) -> None:
        self.config = config
        self._clock = clock
        self.keys = SigningKeys(config.jwks_url, session, clock)

    async def validate(self, token: str) -> Identity:
        """The identity a token proves, or `InvalidToken`; `KeysUnavailable` if no signing key can be had."""
        import jwt  # noqa: PLC0415 - PyJWT loads with the first token

        if not looks_like_jwt(token):
            raise InvalidToken("not a JWT")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"unreadable header: {type(exc).__name__}") from None
        if header.get("alg") != ALGORITHM:
            raise InvalidToken(f"algorithm {str(header.get('alg'))[:20]!r} refused (only {ALGORITHM})")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > 200:
            raise InvalidToken("no key id")
        key = await self.keys.key(kid)
        if key is None:
            raise InvalidToken(f"unknown signing key id {kid[:64]!r}")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=list(self.config.audiences),
                issuer=list(self.config.issuers),
                # Lifetime is checked below against the injected clock, not PyJWT's time.time().
                options={
                    "require": ["exp", "iss", "aud"],
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.InvalidAudienceError:
            raise InvalidToken("wrong audience") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken("wrong issuer") from None
        except jwt.InvalidSignatureError:
            raise InvalidToken("bad signature") from None
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"invalid token: {type(exc).__name__}") from None
        self._check_lifetime(claims)
        return self._identity(claims)

    def _check_lifetime(self, claims: dict[str, Any]) -> None:
        now, leeway = self._clock.now(), self.config.leeway_seconds
        exp, nbf = claims.get("exp"), claims.get("nbf")
        if isinstance(exp, bool) or not isinstance(exp, int | float):
            raise InvalidToken("exp is not a number")
        if now >= exp + leeway:
            raise InvalidToken("expired")
        if nbf is not None:
            if isinstance(nbf, bool) or not isinstance(nbf, int | float):
                raise InvalidToken("nbf is not a number")
            if now < nbf - leeway:
                raise InvalidToken("not yet valid")

    def _identity(self, claims: dict[str, Any]) -> Identity:
        oid, tid = claims.get("oid"), claims.get("tid")
        if not isinstance(oid, str) or not oid:
            raise InvalidToken("no oid claim")
        if tid is not None and str(tid).lower() != self.config.tenant_id:
            raise InvalidToken("token of another tenant")
        roles = claims.get("roles") or []
        scopes = claims.get("scp") or ""
        granted = frozenset([r for r in roles if isinstance(r, str)] if isinstance(roles, list) else []) | frozenset(
            scopes.split() if isinstance(scopes, str) else []
        )
        app_id = claims.get("appid") or claims.get("azp")
        name = claims.get("name") or claims.get("upn") or claims.get("preferred_username")
        return Identity(
            oid=oid.lower(),
            tenant_id=str(tid or self.config.tenant_id).lower(),
            app_id=str(app_id) if app_id else None,
            name=str(name)[:200] if name else None,
            roles=granted,
        )


async def identify(validator: TokenValidator, token: str, *, purpose: str) -> Identity:
    """The token's identity, or the caller's answer: 401 (invalid) / 503 (signing keys unreachable, none known).

    `purpose` names the token in the log ("bearer token", "admin token"); the token itself is never logged.
    """
    try:
        return await validator.validate(token)
    except InvalidToken as exc:
        log.warning("%s refused: %s", purpose, exc.reason)
        raise Unauthorized("Access denied: invalid or expired Entra ID token.", code="invalid_token") from None
    except KeysUnavailable as exc:
        log.warning("%s not checked: %s", purpose, exc)
        raise ServiceUnavailable(
            "The token's signing keys cannot be fetched right now; retry shortly.", code="auth_unavailable"
        ) from None
