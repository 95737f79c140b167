"""Auth on `/v1/realtime`: the Bearer header as everywhere, or the key in the
`openai-insecure-api-key.<key>` subprotocol that browser clients send (in-process app, no
model: a request that passes auth meets the not-ready 503)."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from stt_sidecar.auth import make_auth_middleware, subprotocol_key
from stt_sidecar.config import SidecarSettings
from stt_sidecar.errors import error_middleware
from stt_sidecar.model import ModelSource
from stt_sidecar.realtime.handler import add_realtime_routes
from stt_sidecar.state import STATE, SidecarState

URL = "/v1/realtime?intent=transcription"


@pytest.fixture
async def client(aiohttp_client: Any) -> Any:
    app = web.Application(middlewares=[error_middleware, make_auth_middleware("sekret")])
    app[STATE] = SidecarState(
        settings=SidecarSettings(api_key="sekret"),
        source=ModelSource("tiny.en", "/nowhere"),
        device="cpu",
        compute_type="int8",
    )
    add_realtime_routes(app)
    return await aiohttp_client(app)


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"Sec-WebSocket-Protocol": "realtime, openai-insecure-api-key.wrong"}, 401),
        ({"Sec-WebSocket-Protocol": "realtime"}, 401),
        ({"Authorization": "Bearer sekret"}, 503),
        ({"Sec-WebSocket-Protocol": "realtime, openai-insecure-api-key.sekret"}, 503),
    ],
)
async def test_key_in_header_or_subprotocol(client: Any, headers: dict[str, str], status: int):
    response = await client.get(URL, headers=headers)
    assert response.status == status
    assert (await response.json())["error"]["code"] in ("invalid_api_key", "model_not_ready")


async def test_the_subprotocol_key_is_only_for_realtime(client: Any) -> None:
    headers = {"Sec-WebSocket-Protocol": "openai-insecure-api-key.sekret"}
    assert (await client.get("/v1/stream", headers=headers)).status == 401


def test_subprotocol_parsing() -> None:
    assert subprotocol_key("realtime, openai-insecure-api-key.k1, openai-beta.realtime-v1") == "k1"
    assert subprotocol_key("openai-insecure-api-key.") is None
    assert subprotocol_key(None) is None
