"""Long uploads are decoded in pieces of at most 30 s cut in pauses, and while a stream is open
batch pieces leave one decode worker to streaming (issue #10: a whole-file job used to hold a
worker for its whole length, delaying finals by seconds)."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Iterator

import aiohttp
import numpy as np
import pytest
from faster_whisper import WhisperModel

from stt_sidecar import scheduler as scheduler_module
from stt_sidecar.long_form import PIECE_MAX_S, plan_pieces
from stt_sidecar.model import bundled_model_path
from stt_sidecar.scheduler import DecodeScheduler, Priority
from stt_sidecar.whisper_options import DecodeRequest, decode_options

from .batch_support import form
from .support.long_audio import long_speech, wav_bytes
from .support.speech import DATA, clip, conversation, normalize, read_pcm16, wer

RATE = 16000


def test_pieces_cover_the_audio_and_are_cut_in_pauses() -> None:
    audio, _ = long_speech(150)
    pieces = plan_pieces(audio)  # VAD only: quick
    assert pieces[0][0] == 0 and pieces[-1][1] == audio.shape[0]
    assert all(a[1] == b[0] for a, b in itertools.pairwise(pieces))
    assert all(end - start <= PIECE_MAX_S * RATE for start, end in pieces)
    assert len(pieces) >= 5
    for _, cut in pieces[:-1]:  # the 40 ms around each cut is a pause (hiss at ~-72 dBFS)
        around = audio[cut - 320 : cut + 320].astype(np.float32)
        assert np.sqrt(np.mean(around**2)) < 200, cut / RATE


def test_unbroken_speech_is_cut_at_its_quietest() -> None:
    """No pause long enough for the VAD: the cut goes at the quietest 20 ms, never past 30 s."""
    speech = [read_pcm16(c.path)[0] for c in (clip("jfk.wav"), clip("librivox_0870.wav"))]
    audio = np.concatenate([speech[0][: 10 * RATE], speech[1], speech[0], speech[1]])
    pieces = plan_pieces(audio)
    assert all(end - start <= PIECE_MAX_S * RATE for start, end in pieces)
    assert pieces[-1][1] == audio.shape[0]


async def test_long_upload_same_words_and_times(sidecar_url: str) -> None:
    """conversation.wav (49.8 s, two pieces): the words of every utterance, once each, at the
    right times; no word lost or doubled at the cut."""
    timing = conversation()
    async with aiohttp.ClientSession() as http:
        async with http.post(
            sidecar_url + "/v1/audio/transcriptions",
            data=form(
                (DATA / "conversation.wav").read_bytes(),
                response_format="verbose_json",
                timestamp_granularities__=["word", "segment"],
            ),
        ) as response:
            body = await response.json()
    assert response.status == 200, body
    assert body["duration"] == pytest.approx(timing["duration"], abs=0.05)
    refs = [u["text"] for u in timing["utterances"]]
    assert wer(" ".join(refs), body["text"]) <= 0.08, body["text"]
    starts = [w["start"] for w in body["words"]]
    assert starts == sorted(starts)
    assert [s["id"] for s in body["segments"]] == list(range(len(body["segments"])))
    for utterance in timing["utterances"]:
        inside = [
            w["word"]
            for w in body["words"]
            if utterance["start"] - 0.5 <= w["start"] and w["end"] <= utterance["end"] + 0.5
        ]
        heard = normalize(" ".join(inside))
        assert wer(utterance["text"], heard) <= 0.3, (utterance["text"], heard)


async def test_long_upload_is_transcribed_throughout(sidecar_url: str) -> None:
    """75 s of real speech and pauses in one upload, in three pieces: right words throughout,
    and the last word lands near the end of the file. (590 s, the benchmark's length, works
    the same and takes a while: bench/flood.py.)"""
    audio, reference = long_speech(75)
    async with aiohttp.ClientSession() as http:
        async with http.post(
            sidecar_url + "/v1/audio/transcriptions",
            data=form(wav_bytes(audio), response_format="verbose_json"),
            timeout=aiohttp.ClientTimeout(total=600),
        ) as response:
            body = await response.json()
    assert response.status == 200, body
    assert wer(reference, body["text"]) <= 0.08
    assert body["segments"][-1]["end"] > audio.shape[0] / RATE - 5


# -- the scheduler keeps a worker for streams ------------------------------------------------


@pytest.fixture(scope="module")
def model() -> Iterator[WhisperModel]:
    yield WhisperModel(
        str(bundled_model_path()), device="cpu", compute_type="int8", cpu_threads=1, num_workers=2
    )


async def test_open_stream_keeps_a_worker_from_batch(
    model: WhisperModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers, a stream open, three batch pieces queued: batch runs one at a time, and a
    final submitted meanwhile starts before the running batch piece ends (it does not queue
    behind batch). Once the stream closes, batch uses both workers again."""
    real = scheduler_module.run_whisper
    events: list[tuple[str, str]] = []
    lock = threading.Lock()

    def recording(model_, audio, options, window=None):
        kind = options.get("_kind", "?")
        with lock:
            events.append(("start", kind))
        try:
            return real(model_, audio, {k: v for k, v in options.items() if k != "_kind"}, window)
        finally:
            with lock:
                events.append(("end", kind))

    monkeypatch.setattr(scheduler_module, "run_whisper", recording)
    stream_open = True
    scheduler = DecodeScheduler(model, workers=2, streams_open=lambda: stream_open)
    scheduler.start()
    speech = read_pcm16(clip("jfk.wav").path)[0].astype(np.float32) / 32768.0
    options = decode_options(DecodeRequest(language="en"))
    try:
        batch = [
            asyncio.create_task(
                scheduler.transcribe(speech, {**options, "_kind": "batch"}, Priority.BATCH)
            )
            for _ in range(3)
        ]
        await asyncio.sleep(0.05)
        short = read_pcm16(clip("goforward.wav").path)[0].astype(np.float32) / 32768.0
        final = await scheduler.transcribe(
            short, {**options, "_kind": "final"}, Priority.FINAL, owner="s"
        )
        assert "forward" in final.segments[0].text.lower()
        await asyncio.gather(*batch)
        running, peak = 0, 0
        for edge, kind in events:
            if kind == "batch":
                running += 1 if edge == "start" else -1
                peak = max(peak, running)
        assert peak == 1, events
        first_batch_end = events.index(("end", "batch"))
        assert events.index(("start", "final")) < first_batch_end, events

        events.clear()
        stream_open = False
        scheduler.poke()
        await asyncio.gather(
            *(
                scheduler.transcribe(speech, {**options, "_kind": "batch"}, Priority.BATCH)
                for _ in range(2)
            )
        )
        assert events[:2] == [("start", "batch"), ("start", "batch")], events
    finally:
        await scheduler.close()
