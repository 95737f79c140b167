"""custom_stt.STT inside a real AgentSession (no room): user_input_transcribed carries the words.

The session uses the STT's own endpointing (`turn_detection="stt"`, `vad=None`), so no Silero
plugin is needed, and a custom `voice.io.AudioInput` plays real speech as 48 kHz 10 ms frames.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
from livekit import rtc
from livekit.agents import Agent, AgentSession, UserInputTranscribedEvent
from livekit.agents.voice import io
from livekit.plugins import custom_stt

from .plugin_support import build_script, frames_10ms
from .support.audio import upsample_48k
from .support.sidecar import SidecarProcess
from .support.speech import clip, wer


class SpeechInput(io.AudioInput):
    """A live microphone playing a script at `speed` x real time, then silence until closed."""

    def __init__(self, frames: list[rtc.AudioFrame], speed: float = 2.0) -> None:
        super().__init__(label="test-speech")
        self._frames = frames
        self._speed = speed
        self._i = 0
        self._started: float | None = None
        self._silence = rtc.AudioFrame(np.zeros(480, np.int16).tobytes(), 48000, 1, 480)
        self.closed = False

    async def __anext__(self) -> rtc.AudioFrame:
        if self.closed:
            raise StopAsyncIteration
        if self._started is None:
            self._started = time.monotonic()
        due = self._started + self._i * 0.01 / self._speed
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        frame = self._frames[self._i] if self._i < len(self._frames) else self._silence
        self._i += 1
        return frame


async def test_agent_session_user_input_transcribed(sidecar: SidecarProcess) -> None:
    script = build_script(["librivox_0880.wav", "goforward.wav"], gap_s=1.2)
    audio = SpeechInput(frames_10ms(upsample_48k(script.pcm)))
    engine = custom_stt.STT(base_url=sidecar.url, api_key=None)
    session = AgentSession(stt=engine, vad=None, turn_handling={"turn_detection": "stt"})
    finals: list[str] = []
    got_both = asyncio.Event()

    @session.on("user_input_transcribed")
    def _on_transcript(ev: UserInputTranscribedEvent) -> None:
        if ev.is_final:
            finals.append(ev.transcript)
            if len(finals) >= 2:
                got_both.set()

    session.input.audio = audio
    await session.start(agent=Agent(instructions="Only listen."), record=False)
    try:
        async with asyncio.timeout(40):
            await got_both.wait()
    finally:
        audio.closed = True
        await session.aclose()
        await engine.aclose()

    assert wer(clip("librivox_0880.wav").text, finals[0]) <= 0.25, finals
    assert wer(clip("goforward.wav").text, finals[1]) <= 0.25, finals
