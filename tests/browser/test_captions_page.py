"""A real browser joins a room and shows the worker's captions.

Headless Chromium opens index.html (livekit-client from npm), its fake microphone plays
jfk.wav, the worker (real LiveKit server, real sidecar) transcribes it, and the page shows
the words on all three channels the worker publishes: the `lk.transcription` text stream,
the legacy transcription packet (`RoomEvent.TranscriptionReceived`) and the data messages.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

import pytest

from ..livekit_server import LiveKitServerInfo
from ..support.speech import clip, normalize, wer
from .conftest import Worker, make_token, missing_browser_pieces, run_browser, speech_wav

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(missing_browser_pieces() is not None, reason=str(missing_browser_pieces())),
]

CHANNELS = ("text-stream", "legacy", "data")


async def test_browser_page_shows_captions_from_all_three_channels(
    livekit_server: LiveKitServerInfo,
    static_site: str,
    worker: Worker,  # before room_name: the room is deleted first, so the job ends by itself
    room_name: str,
    tmp_path: Path,
) -> None:
    reference = clip("jfk.wav").text
    wav = speech_wav(tmp_path / "mic.wav", 2.0, "jfk.wav", 3.0)
    token = await make_token(livekit_server, worker, room_name, "alice", "Alice")
    query = urlencode({"url": livekit_server.url, "token": token})
    run = await run_browser(
        {
            "mode": "captions",
            "pageUrl": f"{static_site}/index.html?{query}",
            "wav": str(wav),
            # wait for most of these words; the WER check below is the real one
            "words": normalize(reference).split(),
            "viewport": {"width": 1400, "height": 330},
        },
        tmp_path / "browser-captions.png",
        timeout_s=90,
    )
    snap = run.report["snapshot"]
    state = snap["state"]
    assert run.ok, f"the words never reached every channel: {snap['shown']}\n{run.report}"
    assert state["error"] is None
    # the page turned the microphone on only after seeing the agent's lk.agent.state
    assert state["agentState"] == "listening" and state["agentIdentity"]
    mic = state["micTrackSid"]
    assert mic.startswith("TR_")

    for channel in CHANNELS:
        captions = list(state["captions"][channel].values())
        finals = [c for c in captions if c["final"]]
        text = " ".join(c["text"] for c in finals)
        assert wer(reference, text) <= 0.2, (channel, text)
        # attributed to the speaker (the browser) and its microphone track
        assert {c["identity"] for c in captions} == {"alice"}, (channel, captions)
        assert {c["who"] for c in captions} == {"Alice"}
        assert {c["track"] for c in captions} == {mic}, (channel, captions)
        # and on the page itself, not only in its state
        for final in finals:
            assert normalize(final["text"]) in normalize(snap["shown"][channel])

    # one utterance, one segment id, the same on every channel
    ids = [set(state["captions"][ch]) for ch in CHANNELS]
    assert ids[0] == ids[1] == ids[2], ids
    assert run.screenshot.stat().st_size > 10_000
