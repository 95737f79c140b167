"""Reading a batch upload: a multipart form with a `file` field, or a raw audio body.

The body is read chunk by chunk so that two limits hold while it streams in, whatever the
client declares: the size cap (413 as soon as it is passed, chunked bodies included, and at
once when `Content-Length` already says so) and an idle timeout (408 when the client stops
sending for `STT_READ_TIMEOUT_S`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TypeVar

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from .errors import ApiError

T = TypeVar("T")

CHUNK_SIZE = 64 * 1024
MAX_FORM_FIELDS = 32  # a real form has at most ~8; more is abuse
MAX_TEXT_FIELD_BYTES = 64 * 1024  # the prompt is the longest text field
# Slower than this on average and the upload is dropped (408): 25 MiB then takes at most ~7 min.
MIN_UPLOAD_BYTES_PER_S = 64 * 1024

# Raw bodies we take as audio; the container is sniffed by FFmpeg, so the exact subtype does not
# matter, only that the client says "this is a media file".
_RAW_AUDIO_TYPES = ("application/octet-stream", "application/ogg")
_RAW_AUDIO_PREFIXES = ("audio/", "video/")


@dataclass
class Upload:
    """The audio bytes and the text fields that came with them."""

    audio: bytes
    fields: dict[str, list[str]] = field(default_factory=dict)

    def get(self, name: str) -> str | None:
        """The last value of a text field, or None."""
        values = self.fields.get(name)
        return values[-1] if values else None

    def get_all(self, name: str) -> list[str]:
        return self.fields.get(name, [])


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        f"Request body is larger than the upload limit of {limit / 1048576:g} MiB.",
        "too_large",
    )


class _BodyBudget:
    """Enforces, on every read from one request body, the size limit, the idle timeout, and a
    minimum average rate: a client trickling a byte just often enough to dodge the idle timeout
    would otherwise hold one of the few batch slots for as long as it likes."""

    def __init__(self, request: web.Request, max_bytes: int, idle_timeout: float) -> None:
        self._request = request
        self.max_bytes = max_bytes
        self._idle_timeout = idle_timeout
        self._loop = asyncio.get_running_loop()
        self._started = self._loop.time()

    def _deadline(self) -> float:
        # The time allowed grows with what has arrived: one idle timeout of grace, then
        # MIN_UPLOAD_BYTES_PER_S on average. A deadline from the size limit alone would let a
        # few bytes hold a batch slot for max_bytes / rate (7 min at the defaults).
        received = min(self._request.content.total_bytes, self.max_bytes)
        return self._started + self._idle_timeout + received / MIN_UPLOAD_BYTES_PER_S

    async def wait(self, read: Awaitable[T]) -> T:
        remaining = self._deadline() - self._loop.time()
        try:
            result = await asyncio.wait_for(read, max(0.0, min(self._idle_timeout, remaining)))
        except asyncio.TimeoutError:
            if remaining <= self._idle_timeout:
                raise ApiError(
                    408,
                    f"The upload is too slow (under {MIN_UPLOAD_BYTES_PER_S // 1024} KiB/s).",
                    "timeout",
                ) from None
            raise ApiError(
                408, f"No request data received for {self._idle_timeout:g} s.", "timeout"
            ) from None
        except web.RequestPayloadError:  # bad chunk framing or Content-Encoding
            raise ApiError(400, "The request body could not be read.", "invalid_request") from None
        except (ValueError, HttpProcessingError):
            # aiohttp's multipart reader: missing boundary or early end (ValueError), and part
            # headers its HTTP parser rejects (InvalidHeader, LineTooLong: NUL or control
            # characters, a line over its limit). All the client's doing, so 400, not 503.
            raise ApiError(400, "The multipart form is malformed.", "invalid_request") from None
        # total_bytes counts bytes received (after de-chunking and decompression), so multipart
        # framing counts too
        if self._request.content.total_bytes > self.max_bytes:
            raise _too_large(self.max_bytes)
        return result


def _query_fields(request: web.Request) -> dict[str, list[str]]:
    # Query parameters work with both body kinds; a form field of the same name wins.
    return {k: list(request.query.getall(k)) for k in request.query}


async def _read_raw(request: web.Request, budget: _BodyBudget) -> bytes:
    body = bytearray()
    while chunk := await budget.wait(request.content.readany()):
        body.extend(chunk)
    return bytes(body)


async def _read_part(part: BodyPartReader, budget: _BodyBudget, limit: int) -> bytes:
    data = bytearray()
    while chunk := await budget.wait(part.read_chunk(CHUNK_SIZE)):
        data.extend(chunk)
        if len(data) > limit:
            raise ApiError(
                400, f"Form field {part.name!r} is too long.", "invalid_parameter", param=part.name
            )
    return bytes(data)


async def _read_multipart(request: web.Request, budget: _BodyBudget) -> Upload:
    try:
        reader = await request.multipart()
    except (ValueError, AssertionError):  # no boundary, or not really multipart
        raise ApiError(400, "The multipart form could not be parsed.", "invalid_request") from None
    upload = Upload(audio=b"", fields=_query_fields(request))
    found_file = False
    count = 0
    while (part := await budget.wait(reader.next())) is not None:
        count += 1
        if count > MAX_FORM_FIELDS:
            raise ApiError(400, "Too many form fields.", "invalid_request")
        if not isinstance(part, BodyPartReader):
            raise ApiError(400, "Nested multipart forms are not supported.", "invalid_request")
        name = part.name or ""
        if name == "file":
            data = await _read_part(part, budget, budget.max_bytes)
            if not found_file:  # the first file wins, like OpenAI
                upload.audio, found_file = data, True
            continue
        raw = await _read_part(part, budget, MAX_TEXT_FIELD_BYTES)
        try:
            value = raw.decode(part.get_charset("utf-8"))
        # UnicodeError, not just UnicodeDecodeError: the charset is the client's choice of
        # codec, and some (`undefined`, `idna`) raise the base class
        except (UnicodeError, LookupError):
            raise ApiError(
                400,
                f"Form field {name!r} is not valid UTF-8 text.",
                "invalid_parameter",
                param=name,
            ) from None
        upload.fields.setdefault(name, []).append(value)
    if not found_file:
        raise ApiError(
            400,
            "Missing the audio file: send it in the form field 'file'.",
            "missing_file",
            param="file",
        )
    return upload


async def read_upload(request: web.Request, *, max_bytes: int, idle_timeout: float) -> Upload:
    """Read a multipart form (field `file` plus text fields) or a raw `audio/*` body.

    For a raw body the text fields come from the query string.

    Args:
        request: The incoming request; its body is consumed.
        max_bytes: Largest body accepted (`STT_MAX_UPLOAD_MB`).
        idle_timeout: Longest wait for the next chunk of body (`STT_READ_TIMEOUT_S`).

    Raises:
        ApiError: 413 too large, 408 stalled, 415 not a form nor audio, 400 malformed form
            or no `file` field.
    """
    if request.content_length is not None and request.content_length > max_bytes:
        raise _too_large(max_bytes)  # refuse before reading a byte of it
    content_type = request.content_type
    budget = _BodyBudget(request, max_bytes, idle_timeout)
    if content_type == "multipart/form-data":
        return await _read_multipart(request, budget)
    if content_type in _RAW_AUDIO_TYPES or content_type.startswith(_RAW_AUDIO_PREFIXES):
        return Upload(audio=await _read_raw(request, budget), fields=_query_fields(request))
    raise ApiError(
        415,
        f"Unsupported Content-Type {content_type[:100]!r}: send multipart/form-data with a 'file' "
        "field, or the audio itself with an audio/* Content-Type.",
        "unsupported_media_type",
    )
