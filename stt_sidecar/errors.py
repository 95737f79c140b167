"""Errors in OpenAI's shape, `{"error": {"message", "type", "code", "param"}}`, and the
middlewares that guarantee every response carries a request id and no internals."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

logger = logging.getLogger("stt_sidecar.http")

REQUEST_ID = web.RequestKey("request_id", str)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    503: "server_error",
}


class ApiError(Exception):
    """Raised by handlers; becomes a JSON error response."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str,
        *,
        param: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.retry_after = retry_after


def error_response(
    status: int,
    message: str,
    code: str,
    *,
    param: str | None = None,
    retry_after: int | None = None,
) -> web.Response:
    body = {
        "error": {
            "message": message,
            "type": _TYPES.get(status, "invalid_request_error"),
            "code": code,
            "param": param,
        }
    }
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return web.json_response(body, status=status, headers=headers)


def _from_http_exception(exc: web.HTTPException) -> web.Response:
    status = exc.status
    if status == 413:
        return error_response(413, "Request body is larger than the upload limit.", "too_large")
    if status == 404:
        return error_response(404, "No such endpoint.", "not_found")
    if status == 405:
        return error_response(405, "Method not allowed on this endpoint.", "method_not_allowed")
    if status in (408, 400):
        return error_response(status, "The request could not be read.", "bad_request")
    if status >= 500:
        return error_response(503, "The server failed to handle the request.", "internal_error")
    return error_response(status, exc.reason or "Request rejected.", "http_error")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every response gets `X-Request-Id`; every failure becomes a JSON error with no internals.

    A genuine internal failure answers 503 `internal_error`: clients may retry, and nothing about
    the cause (traceback, path, exception class) leaves the process; it goes to the log.
    """
    request_id = request.headers.get("X-Request-Id", "")
    if not (0 < len(request_id) <= 64 and request_id.isascii() and request_id.isprintable()):
        request_id = uuid.uuid4().hex
    request[REQUEST_ID] = request_id
    try:
        response = await handler(request)
    except ApiError as exc:
        response = error_response(
            exc.status, exc.message, exc.code, param=exc.param, retry_after=exc.retry_after
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _from_http_exception(exc)
    except (ConnectionResetError, TimeoutError) as exc:
        # the client went away or stalled mid-upload: nobody to answer, log it quietly
        logger.info("request %s aborted: %s", request_id, type(exc).__name__)
        response = error_response(408, "The request body was not received in time.", "timeout")
    except Exception:
        logger.exception("request %s failed: %s %s", request_id, request.method, request.path)
        response = error_response(503, "The server failed to handle the request.", "internal_error")
    if not response.prepared:
        response.headers["X-Request-Id"] = request_id
    return response
