"""Replay audio over `/v1/stream` at a chosen pace and collect what comes back.

Used by the tests and the benchmarks, and handy by hand:
`python -m stt_sidecar.replay tests/data/conversation.wav --speed 1`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import soundfile


@dataclass
class ReceivedMessage:
    message: dict[str, Any]
    at: float  # seconds since the first audio frame was sent (wall clock)


@dataclass
class ReplayResult:
    messages: list[ReceivedMessage] = field(default_factory=list)
    close_code: int | None = None

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m.message for m in self.messages if m.message.get("type") == kind]

    @property
    def finals(self) -> list[dict[str, Any]]:
        return self.of_type("final")

    def timed(self, kind: str) -> list[ReceivedMessage]:
        return [m for m in self.messages if m.message.get("type") == kind]


def load_pcm16(path: str | Path) -> tuple[np.ndarray, int]:
    """int16 samples shaped (frames, channels) and the sample rate."""
    audio, rate = soundfile.read(path, dtype="int16", always_2d=True)
    return audio, rate


async def replay(
    url: str,
    audio: np.ndarray,
    sample_rate: int,
    *,
    frame_ms: int = 20,
    speed: float = 1.0,
    config: dict[str, Any] | None = None,
    api_key: str | None = None,
    end: str = "close",
    session: aiohttp.ClientSession | None = None,
    timeout: float = 120.0,
) -> ReplayResult:
    """Stream `audio` (int16, shape (frames, channels)) and wait for the server to finish.

    Args:
        url: the `ws://.../v1/stream` address.
        speed: 1.0 is real time, 0 sends as fast as the socket takes it.
        end: "close" sends `{"type":"close"}` and waits for `closed`; "flush" sends a flush
            and waits for `flushed`, then closes; "none" just disconnects.
    """
    channels = audio.shape[1]
    cfg = {
        "type": "config",
        "sample_rate": sample_rate,
        "channels": channels,
        "encoding": "pcm_s16le",
        "language": "en",
        "interim_results": True,
    }
    cfg.update(config or {})
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    own_session = session is None
    http = session or aiohttp.ClientSession()
    result = ReplayResult()
    step = max(1, sample_rate * frame_ms // 1000)
    try:
        async with http.ws_connect(url, headers=headers, heartbeat=30.0) as ws:
            await ws.send_str(json.dumps(cfg))
            t0 = time.monotonic()
            done = asyncio.Event()
            wanted = {"close": "closed", "flush": "flushed"}.get(end)

            async def receive() -> None:
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        continue
                    data = json.loads(msg.data)
                    result.messages.append(ReceivedMessage(data, time.monotonic() - t0))
                    if data.get("type") == wanted or data.get("type") == "error":
                        done.set()
                done.set()

            receiver = asyncio.create_task(receive())
            for i in range(0, len(audio), step):
                if done.is_set():
                    break
                await ws.send_bytes(audio[i : i + step].tobytes())
                if speed > 0:
                    due = t0 + (i + step) / sample_rate / speed
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
            if end == "none":
                receiver.cancel()
            else:
                if not done.is_set():
                    await ws.send_str(json.dumps({"type": end}))
                async with asyncio.timeout(timeout):
                    await done.wait()
                if end == "flush":
                    await ws.close()
                async with asyncio.timeout(timeout):
                    await asyncio.gather(receiver, return_exceptions=True)
            result.close_code = ws.close_code
    finally:
        if own_session:
            await http.close()
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("audio")
    parser.add_argument("--url", default="ws://127.0.0.1:8765/v1/stream")
    parser.add_argument("--speed", type=float, default=1.0)
    parser.add_argument("--api-key")
    args = parser.parse_args(argv)
    audio, rate = load_pcm16(args.audio)
    result = asyncio.run(replay(args.url, audio, rate, speed=args.speed, api_key=args.api_key))
    for m in result.messages:
        print(f"{m.at:7.2f}  {json.dumps(m.message)[:160]}")


if __name__ == "__main__":
    main()


def assign_finals(
    finals: list[dict[str, Any]], utterances: list[dict[str, Any]], slack: float = 0.5
) -> list[list[dict[str, Any]]]:
    """Group finals by the reference utterance (`start`/`end` in seconds) their middle falls in.

    Finals that fall in no utterance (invented words in a pause) are returned last, as an extra
    group, so callers can assert it is empty.
    """
    groups: list[list[dict[str, Any]]] = [[] for _ in range(len(utterances) + 1)]
    for f in finals:
        middle = (f["start"] + f["end"]) / 2
        for i, u in enumerate(utterances):
            if u["start"] - slack <= middle <= u["end"] + slack:
                groups[i].append(f)
                break
        else:
            groups[-1].append(f)
    return groups


def split_and_merged(
    finals: list[dict[str, Any]], utterances: list[dict[str, Any]], margin: float = 0.3
) -> tuple[list[int], list[int]]:
    """Indexes of the reference utterances split into several finals, and of those merged with
    another into one final (a final reaching `margin` seconds into each of them)."""
    groups = assign_finals(finals, utterances)
    split = [i for i, g in enumerate(groups[:-1]) if len(g) > 1]
    merged: set[int] = set()
    for f in finals:
        inside = [
            i
            for i, u in enumerate(utterances)
            if f["start"] < u["speech_end"] - margin and f["end"] > u["speech_start"] + margin
        ]
        if len(inside) > 1:
            merged.update(inside)
    return split, sorted(merged)
