"""Bearer-token auth for every endpoint but `/health`, checked before any body is read."""

from __future__ import annotations

import hmac

from aiohttp import web

from .errors import Handler, error_response

OPEN_PATHS = frozenset({"/health"})
# Browsers cannot set headers on a WebSocket: OpenAI's realtime clients put the key in a
# subprotocol instead, `openai-insecure-api-key.<key>` (the server answers `realtime`).
SUBPROTOCOL_KEY_PATHS = frozenset({"/v1/realtime"})
_KEY_SUBPROTOCOL = "openai-insecure-api-key."


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def subprotocol_key(header: str | None) -> str | None:
    """The key in `Sec-WebSocket-Protocol: realtime, openai-insecure-api-key.<key>`."""
    for proto in (header or "").split(","):
        proto = proto.strip()
        if proto.startswith(_KEY_SUBPROTOCOL) and len(proto) > len(_KEY_SUBPROTOCOL):
            return proto[len(_KEY_SUBPROTOCOL) :]
    return None


def make_auth_middleware(api_key: str | None):
    """Middleware requiring `Authorization: Bearer <api_key>`; a no-op when no key is set."""
    expected = api_key.encode() if api_key else None

    @web.middleware
    async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if expected is None or request.path in OPEN_PATHS:
            return await handler(request)
        token = bearer_token(request.headers.get("Authorization"))
        if token is None and request.path in SUBPROTOCOL_KEY_PATHS:
            token = subprotocol_key(request.headers.get("Sec-WebSocket-Protocol"))
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
