"""SIGTERM while streams (/v1/stream and /v1/realtime) are mid-utterance: finals first, then
close 1001, exit 0."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import aiohttp

from stt_sidecar.replay import load_pcm16

from .support.realtime import encode_for
from .support.sidecar import SidecarProcess
from .support.speech import clip


async def test_sigterm_finalizes_open_utterances_then_exits_cleanly() -> None:
    sidecar = SidecarProcess(STT_SHUTDOWN_GRACE_S="8").start()
    try:
        audio, rate = load_pcm16(clip("librivox_0870.wav").path)
        async with aiohttp.ClientSession() as http:
            sockets = []
            for _ in range(2):
                ws = await http.ws_connect(sidecar.ws_url)
                await ws.send_str(json.dumps({"type": "config", "sample_rate": rate}))
                assert (await ws.receive_json(timeout=10))["type"] == "ready"
                sockets.append(ws)
            realtime = await http.ws_connect(
                sidecar.url.replace("http", "ws", 1) + "/v1/realtime?intent=transcription"
            )
            pcm24k = encode_for("pcm16", audio[:, 0])[0]
            # 4 s of "and mister john dashwood had then leisure to consider ..." in real time
            for i in range(0, 4 * rate, 320):
                for ws in sockets:
                    await ws.send_bytes(audio[i : i + 320].tobytes())
                chunk = base64.b64encode(pcm24k[i * 3 : (i + 320) * 3]).decode()
                await realtime.send_str(
                    json.dumps({"type": "input_audio_buffer.append", "audio": chunk})
                )
                await asyncio.sleep(0.02)
            started = time.monotonic()
            sidecar.proc.terminate()  # SIGTERM

            async def read_to_end(ws: aiohttp.ClientWebSocketResponse) -> list[dict]:
                messages = []
                async for msg in ws:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        messages.append(json.loads(msg.data))
                return messages

            async def keep_talking(ws: aiohttp.ClientWebSocketResponse) -> None:
                # Clients do not know the server is stopping: audio keeps coming (the plugin
                # always does). It must not cut the finals short.
                for i in range(4 * rate, len(audio), 320):
                    if ws.closed:
                        return
                    try:
                        await ws.send_bytes(audio[i : i + 320].tobytes())
                    except ConnectionError:
                        return
                    await asyncio.sleep(0.02)

            # Read both at once: the server waits 2 s for each close handshake, and a socket
            # left unread that long sees its close reply fail, which aiohttp reports as 1006.
            talkers = [asyncio.create_task(keep_talking(ws)) for ws in sockets]
            *everything, realtime_events = await asyncio.gather(
                *(read_to_end(ws) for ws in [*sockets, realtime])
            )
            await asyncio.gather(*talkers)
            for ws, messages in zip(sockets, everything, strict=True):
                finals = [m for m in messages if m["type"] == "final"]
                assert finals, messages
                assert "dashwood" in " ".join(f["text"] for f in finals).lower()
                assert ws.close_code == 1001
            completed = [
                e
                for e in realtime_events
                if e["type"] == "conversation.item.input_audio_transcription.completed"
            ]
            assert "dashwood" in " ".join(e["transcript"] for e in completed).lower()
            assert realtime.close_code == 1001
        code = await asyncio.to_thread(sidecar.proc.wait, 15)
        assert code == 0, sidecar.log()
        assert time.monotonic() - started < 8 + 5
    finally:
        sidecar.stop()
