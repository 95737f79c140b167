"""Bearer-token auth for every endpoint but `/health`, checked before any body is read."""

from __future__ import annotations

import hmac

from aiohttp import web

from .errors import Handler, error_response

OPEN_PATHS = frozenset({"/health"})


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def make_auth_middleware(api_key: str | None):
    """Middleware requiring `Authorization: Bearer <api_key>`; a no-op when no key is set."""
    expected = api_key.encode() if api_key else None

    @web.middleware
    async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if expected is None or request.path in OPEN_PATHS:
            return await handler(request)
        token = bearer_token(request.headers.get("Authorization"))
        # compare_digest on bytes: constant time whatever the length of the guess. aiohttp
        # decodes header bytes that are not UTF-8 with surrogateescape; encoding the same way
        # gives back the bytes the client sent instead of raising (a 503 for any stranger).
        if token is None or not hmac.compare_digest(
            token.encode("utf-8", "surrogateescape"), expected
        ):
            return error_response(
                401, "Missing or invalid API key (Authorization: Bearer <key>).", "invalid_api_key"
            )
        return await handler(request)

    return auth_middleware
