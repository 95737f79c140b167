"""The process answers /health at once and /ready once the model is warm."""

import aiohttp


async def test_health_and_ready(sidecar_url: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(sidecar_url + "/health") as r:
            assert r.status == 200
            assert (await r.json()) == {"status": "ok"}
            assert r.headers["X-Request-Id"]
        async with http.get(sidecar_url + "/ready") as r:
            assert r.status == 200
            body = await r.json()
    assert body["model"] == "tiny.en"
    assert body["device"] == "cpu"
    assert body["compute_type"] == "int8"
    assert 0.0 <= body["load"] <= 1.0
