"""Entra ID callers: bearer tokens validated by the gateway itself, mapped to subscriptions by object id.

Where each part lives: `config` (GATEWAY_ENTRA_*, typed), `keys` (the tenant's
signing keys: fetched, cached, refetched on an unknown key id at a bounded
rate), `tokens` (validating one token: RS256 signature, issuer, audience,
lifetime, roles), `callers` (a valid token's `oid` -> its subscription, cached
like key lookups). PyJWT does the cryptography and loads on the first token,
so cold starts without Entra stay cheap.
"""
