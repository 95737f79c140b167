"""`StreamSession` endpointing, speculation, cuts and flushes, driven without a model: a fake
scheduler (the `SessionScheduler` Protocol) and a VAD whose probability is the audio's loudness."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from faster_whisper.transcribe import Word

from stt_sidecar.audio_format import SAMPLE_RATE
from stt_sidecar.config import SidecarSettings
from stt_sidecar.metrics import SidecarMetrics
from stt_sidecar.scheduler import DecodeResult, Priority
from stt_sidecar.streaming import protocol
from stt_sidecar.streaming.session import StreamSession
from stt_sidecar.streaming.vad import WINDOW

from .whisper_results import segment_of

SPEECH = 0.1  # amplitude the fake VAD maps to probability 1.0
FRAME = SAMPLE_RATE // 50  # 20 ms, as clients send


class LoudnessVAD:
    """Probability per WINDOW = 10 x mean |amplitude|, clipped: 0.1 is speech, 0 silence."""

    def __init__(self) -> None:
        self._pending = np.zeros(0, dtype=np.float32)

    def process(self, audio: np.ndarray) -> np.ndarray:
        self._pending = np.concatenate([self._pending, audio])
        count = self._pending.size // WINDOW
        windows = self._pending[: count * WINDOW].reshape(count, WINDOW)
        self._pending = self._pending[count * WINDOW :]
        return np.minimum(1.0, np.abs(windows).mean(axis=1) * 10).astype(np.float32)


@dataclass
class Job:
    priority: Priority
    samples: int
    owner: Any
    encoder_window_s: float | None


@dataclass
class FakeScheduler:
    """Answers every decode at once with one word per call; records what was asked."""

    jobs: list[Job] = field(default_factory=list)
    batch_running: bool = False
    english_only: bool = True
    queue_depth: int = 0
    busy: Any = field(default_factory=lambda: SimpleNamespace(fraction=lambda: 0.0))

    async def transcribe(
        self,
        audio: np.ndarray,
        options: dict[str, Any],
        priority: Priority,
        *,
        owner: Any = None,
        encoder_window_s: float | None = None,
    ) -> DecodeResult:
        self.jobs.append(Job(priority, audio.size, owner, encoder_window_s))
        await asyncio.sleep(0)
        segment = segment_of(self.words(audio.size / SAMPLE_RATE, encoder_window_s))
        return DecodeResult([segment], SimpleNamespace(language="en"), 0.01, 0.0)

    def words(self, seconds: float, encoder_window_s: float | None) -> list[Word]:
        # one word, ending at the audio's post-speech pad: a decode that heard all the speech
        # (skipped_speech.py)
        end = max(0.9, seconds - 0.4)
        return [Word(max(0.5, end - 0.9), end, self.answer(encoder_window_s), 0.9)]

    def answer(self, encoder_window_s: float | None) -> str:
        return " hello"

    def of(self, priority: Priority) -> list[Job]:
        return [j for j in self.jobs if j.priority == priority]


def pcm(seconds: float, amplitude: float) -> np.ndarray:
    return np.full(round(seconds * SAMPLE_RATE), amplitude, dtype=np.float32)


async def run(
    audio: np.ndarray,
    *,
    interims: bool = False,
    flush_at: float | None = None,
    scheduler: FakeScheduler | None = None,
    metrics: SidecarMetrics | None = None,
    **settings: Any,
) -> tuple[list[dict[str, Any]], FakeScheduler]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scheduler = scheduler or FakeScheduler()
    session = StreamSession(
        "s1",
        protocol.StreamConfig(interim_results=interims),
        scheduler=scheduler,
        # the fixed endpoint: adaptive endpointing has its own tests (test_endpointing.py)
        settings=SidecarSettings(**{"adaptive_endpointing": False, **settings}),
        metrics=metrics or SidecarMetrics(),
        send=send,
        vad=LoudnessVAD(),
    )
    data = (audio * 32768).astype("<i2")
    for begin in range(0, data.size, FRAME):
        session.feed(data[begin : begin + FRAME].tobytes())
        if flush_at is not None and begin + FRAME >= flush_at * SAMPLE_RATE:
            session.flush()
            flush_at = None
        await asyncio.sleep(0)  # let decodes and the sender run, as between client frames
    await session.finish(protocol.closed())
    return sent, scheduler


def kinds(sent: list[dict[str, Any]]) -> list[str]:
    return [m["type"] for m in sent if m["type"] != "interim"]


async def test_silence_after_speech_ends_the_utterance_with_one_final() -> None:
    audio = np.concatenate([pcm(1.0, 0), pcm(1.0, SPEECH), pcm(1.0, 0)])
    sent, scheduler = await run(audio)
    assert kinds(sent) == ["speech_started", "final", "speech_ended", "closed"]
    started, final, ended = sent[0], sent[1], sent[2]
    assert started["start"] == pytest.approx(1.0, abs=WINDOW / SAMPLE_RATE)
    assert final["text"] == "hello" and final["words"][0]["word"] == "hello"
    # the final's words are on the stream clock: the decoded audio began 0.4 s of pre-roll early
    assert final["words"][0]["start"] == pytest.approx(0.6 + 0.5, abs=0.05)
    assert ended["end"] == pytest.approx(2.0, abs=0.05)
    # the final's decode started speculatively, 0.15 s into the pause, and was used
    finals = scheduler.of(Priority.FINAL)
    assert len(finals) == 1 and finals[0].owner == "s1"
    assert finals[0].samples == pytest.approx((2.0 + 0.15 - 0.6) * SAMPLE_RATE, abs=2 * WINDOW)


async def test_a_pause_shorter_than_the_endpoint_keeps_one_utterance() -> None:
    audio = np.concatenate(
        [pcm(0.5, 0), pcm(1.0, SPEECH), pcm(0.3, 0), pcm(1.0, SPEECH), pcm(1.0, 0)]
    )
    sent, scheduler = await run(audio, endpoint_silence_ms=450)
    assert kinds(sent) == ["speech_started", "final", "speech_ended", "closed"]
    # the speculation made in the short pause was stale once speech resumed: decoded again
    assert len(scheduler.of(Priority.FINAL)) == 2
    assert sent[2]["end"] == pytest.approx(2.8, abs=0.05)


async def test_a_longer_endpoint_setting_waits_longer() -> None:
    audio = np.concatenate([pcm(0.5, 0), pcm(1.0, SPEECH), pcm(0.6, 0), pcm(1.0, SPEECH)])
    sent, _ = await run(audio, endpoint_silence_ms=450)
    assert kinds(sent).count("final") == 2
    sent, _ = await run(audio, endpoint_silence_ms=800)
    assert kinds(sent).count("final") == 1


async def test_a_long_utterance_is_cut_at_its_quietest_window() -> None:
    # 2.5 s of speech with one quieter stretch at 2.0 s (still speech: probability 0.4); the cut
    # comes at 2.6 s, when the utterance (from 0.6 s, with pre-roll) reaches 2 s
    speech = pcm(2.5, SPEECH)
    speech[round(1.0 * SAMPLE_RATE) : round(1.064 * SAMPLE_RATE)] = 0.04
    audio = np.concatenate([pcm(1.0, 0), speech, pcm(1.0, 0)])
    sent, scheduler = await run(audio, max_utterance_s=2.0)
    assert kinds(sent) == [
        "speech_started",
        "final",
        "speech_ended",
        "speech_started",
        "final",
        "speech_ended",
        "closed",
    ]
    first_end, second_start = sent[2]["end"], sent[3]["start"]
    # The window wholly inside the quiet stretch is 2.016-2.048 s. The cut lands half a window
    # before it (2.0 s): `probs` starts after the onset window, the cut's arithmetic at onset.
    assert second_start == pytest.approx(2.0, abs=0.001)
    assert first_end <= second_start + 0.001
    assert [m["utterance_id"] for m in sent if m["type"] == "final"] == [1, 2]
    # the first utterance's final decodes its audio up to the cut, pre-roll included
    assert scheduler.of(Priority.FINAL)[0].samples == round(2.0 * SAMPLE_RATE) - (15872 - 6400)


async def test_flush_finalizes_mid_speech_then_says_flushed() -> None:
    audio = np.concatenate([pcm(0.5, 0), pcm(2.0, SPEECH)])
    sent, _ = await run(audio, flush_at=1.5)
    assert kinds(sent)[:4] == ["speech_started", "final", "speech_ended", "flushed"]
    assert sent[kinds(sent).index("speech_ended")]["end"] == pytest.approx(1.5, abs=0.05)


async def test_speech_after_a_flush_is_no_continuation() -> None:
    # the client ended that turn on purpose: the rest is decoded alone (continuation.py)
    audio = np.concatenate([pcm(0.5, 0), pcm(2.0, SPEECH), pcm(1.0, 0)])
    sent, scheduler = await run(audio, flush_at=1.8)
    assert kinds(sent)[:4] == ["speech_started", "final", "speech_ended", "flushed"]
    sizes = [j.samples for j in scheduler.of(Priority.FINAL)]
    # 1.7 s before the flush, 1 s after it: no decode of both
    assert len(sizes) >= 2 and max(sizes) < 2.2 * SAMPLE_RATE


async def test_interims_use_a_short_encoder_window_and_thin_out_under_load() -> None:
    audio = np.concatenate([pcm(0.5, 0), pcm(3.0, SPEECH), pcm(1.0, 0)])
    sent, scheduler = await run(audio, interims=True, interim_interval_ms=500)
    interims = scheduler.of(Priority.INTERIM)
    assert len(interims) == 3  # after 0.5 s of speech, then one a second (interims.py)
    # audio + 3 s, at least 8 s (encoder_windows.py)
    assert all(j.encoder_window_s == 8.0 for j in interims)
    finals = scheduler.of(Priority.FINAL)
    assert finals and all(j.encoder_window_s == 8.0 for j in finals)
    shown = [m for m in sent if m["type"] == "interim"]
    assert shown and all(m["text"] == "hello" for m in shown)
    assert shown[-1]["stable_text"] == "hello"  # two hypotheses agreed


@dataclass
class LoopingInShortWindows(FakeScheduler):
    """Loops, as tiny.en can on a fragment, unless given Whisper's full 30 s window."""

    def answer(self, encoder_window_s: float | None) -> str:
        return " hello" if encoder_window_s is None else " an old-s" + "-y" * 60


async def test_a_looping_final_is_redone_in_30_s_and_a_looping_interim_is_not_shown() -> None:
    audio = np.concatenate([pcm(0.5, 0), pcm(3.0, SPEECH), pcm(1.0, 0)])
    sent, scheduler = await run(
        audio, interims=True, interim_interval_ms=500, scheduler=LoopingInShortWindows()
    )
    finals = scheduler.of(Priority.FINAL)
    assert [j.encoder_window_s for j in finals] == [8.0, None]
    assert [m["text"] for m in sent if m["type"] == "final"] == ["hello"]
    assert scheduler.of(Priority.INTERIM)  # decoded, but never shown
    assert not [m for m in sent if m["type"] == "interim"]


# A final decode's answer: the words (text, start, end in decode time[, probability]) for
# audio of `seconds`
Answer = Callable[[float], list[tuple[Any, ...]]]


def stopping_early(seconds: float) -> list[tuple[str, float, float]]:
    # as tiny.en on "he was not an [pause] ill disposed young man": the text ends at "ill-",
    # the hyphen stretched over the rest of the audio
    return [(" ill", 0.5, 0.9), ("-", 0.9, seconds - 0.4)]


def heard_whole(seconds: float) -> list[tuple[str, float, float]]:
    return [(" young", 0.1, 0.5), (" man", 0.5, seconds - 0.4)]


def looping(seconds: float) -> list[tuple[str, float, float]]:
    return [(" an old-s" + "-y" * 60, 0.1, seconds - 0.4)]


@dataclass
class Scripted(FakeScheduler):
    """Answers final decodes from `answers`, in order."""

    answers: list[Answer] = field(default_factory=list)

    def words(self, seconds: float, encoder_window_s: float | None) -> list[Word]:
        return [Word(w[1], w[2], w[0], (*w, 0.9)[3]) for w in self.answers.pop(0)(seconds)]


def skipped_count(metrics: SidecarMetrics) -> float | None:
    return metrics.registry.get_sample_value("stt_skipped_speech_total")


async def test_speech_a_final_decode_stopped_short_of_is_decoded_on_its_own() -> None:
    audio = np.concatenate([pcm(0.5, 0), pcm(3.0, SPEECH), pcm(1.0, 0)])
    metrics = SidecarMetrics()
    scheduler = Scripted(answers=[stopping_early, heard_whole])
    sent, _ = await run(audio, scheduler=scheduler, metrics=metrics)
    finals = [m for m in sent if m["type"] == "final"]
    assert [m["text"] for m in finals] == ["ill young man"]
    # the utterance's audio (from 0.1 s, with pre-roll), then the part after "ill" (from 0.9 s
    # into it): the decode stopped 2.5 s before the end of speech at 3.5 s
    decoded = [j.samples / SAMPLE_RATE for j in scheduler.of(Priority.FINAL)]
    assert decoded[0] - decoded[1] == pytest.approx(0.9, abs=0.01)
    assert [w["word"] for w in finals[0]["words"]] == ["ill", "young", "man"]
    assert finals[0]["words"][1]["start"] == pytest.approx(0.1 + 0.9 + 0.1, abs=0.05)
    assert skipped_count(metrics) == 1


async def test_a_continuation_that_stopped_short_of_its_speech_decodes_it_alone() -> None:
    # "he was not" ends at a 0.6 s pause; the rest, decoded after its audio, heard "ill" there
    # (the earlier audio's) and then nothing but a stretched hyphen
    audio = np.concatenate(
        [pcm(0.5, 0), pcm(1.0, SPEECH), pcm(0.6, 0), pcm(1.5, SPEECH), pcm(1.0, 0)]
    )

    def first(seconds: float) -> list[tuple[str, float, float]]:
        return [(" He", 0.5, 0.8), (" was", 0.8, 1.0), (" not", 1.0, 1.3)]

    scheduler = Scripted(answers=[first, stopping_early, heard_whole])
    sent, _ = await run(audio, scheduler=scheduler)
    assert [m["text"] for m in sent if m["type"] == "final"] == ["He was not", "young man"]
    finals = scheduler.of(Priority.FINAL)
    # the continuation's decode held the earlier audio; the rest was the new utterance alone
    assert finals[1].samples > finals[2].samples


async def test_a_continuation_that_stretched_an_earlier_word_over_the_new_speech_is_redone() -> (
    None
):
    # the continuation's decode heard "he was not" again, with "not" stretched over the new
    # speech: that "not" is the earlier final's (an echo), and nothing else was heard
    # (a 0.9 s pause: the new utterance's audio starts 0.4 s before its speech, at 1.9 s into
    # the continuation's; "not", taken to last 1 s, ends at 2.0 s, before that speech)
    audio = np.concatenate(
        [pcm(0.5, 0), pcm(1.0, SPEECH), pcm(0.9, 0), pcm(1.5, SPEECH), pcm(1.0, 0)]
    )

    def first(seconds: float) -> list[tuple[str, float, float]]:
        return [(" He", 0.5, 0.8), (" was", 0.8, 0.95), (" not", 0.95, 1.3)]

    def stretched(seconds: float) -> list[tuple[str, float, float]]:
        return [(" He", 0.5, 0.8), (" was", 0.8, 0.95), (" not", 0.95, seconds - 0.4)]

    scheduler = Scripted(answers=[first, stretched, heard_whole])
    sent, _ = await run(audio, scheduler=scheduler)
    assert [m["text"] for m in sent if m["type"] == "final"] == ["He was not", "young man"]
    finals = scheduler.of(Priority.FINAL)
    # redone on the new utterance's audio alone: 0.4 s of pre-roll, its 1.5 s of speech and
    # 0.15 s of the pause after it (what follows "not" would start 0.06 s into the pre-roll)
    assert finals[2].samples / SAMPLE_RATE == pytest.approx(0.4 + 1.5 + 0.15, abs=0.03)


async def test_the_rest_is_looked_for_once_even_when_its_decodes_loop() -> None:
    # a loop in the short window, redone in 30 s: that stops early, and the rest loops too;
    # its retry in 30 s stops early again, and is sent as it is
    audio = np.concatenate([pcm(0.5, 0), pcm(3.0, SPEECH), pcm(1.0, 0)])
    metrics = SidecarMetrics()
    answers: list[Answer] = [looping, stopping_early, looping, stopping_early]
    scheduler = Scripted(answers=answers)
    sent, _ = await run(audio, scheduler=scheduler, metrics=metrics)
    assert [m["text"] for m in sent if m["type"] == "final"] == ["ill ill-"]
    windows = [j.encoder_window_s for j in scheduler.of(Priority.FINAL)]
    assert windows[1] is None and windows[3] is None and len(windows) == 4
    assert skipped_count(metrics) == 1


async def test_a_final_whose_rest_held_no_words_keeps_its_stop_for_the_endpoint() -> None:
    # "Go forward." with a stop Whisper doubts (0.3: wait long), then, after a pause shorter
    # than the endpoint, a sound the VAD took for speech and Whisper for nothing
    audio = np.concatenate(
        [pcm(0.5, 0), pcm(1.0, SPEECH), pcm(0.4, 0), pcm(0.8, SPEECH), pcm(1.5, 0)]
    )

    def doubted_stop(seconds: float) -> list[tuple[Any, ...]]:
        return [(" Go", 0.4, 0.9), (" forward", 0.9, 1.4), (".", 1.4, 1.4, 0.3)]

    metrics = SidecarMetrics()
    # decoded in the pause (and dropped when speech came back), then at the end, then the rest
    scheduler = Scripted(answers=[doubted_stop, doubted_stop, lambda seconds: []])
    sent, _ = await run(audio, scheduler=scheduler, metrics=metrics, adaptive_endpointing=True)
    assert [m["text"] for m in sent if m["type"] == "final"] == ["Go forward."]
    assert skipped_count(metrics) == 1
    long = metrics.registry.get_sample_value("stt_endpoints_total", {"decision": "long"})
    assert long == 1


async def test_no_interim_decodes_a_pause() -> None:
    """Interims start on speech only: none is snapshotted inside a pause shorter than the
    endpoint (one was due just as it began), nor in the silence before the endpoint."""
    audio = np.concatenate(
        [pcm(0.5, 0), pcm(1.45, SPEECH), pcm(0.4, 0), pcm(1.15, SPEECH), pcm(1.0, 0)]
    )
    sent, scheduler = await run(audio, interims=True, interim_interval_ms=500)
    assert kinds(sent).count("final") == 1
    start = 0.5 - 0.4  # onset minus the pre-roll
    ends = [start + j.samples / SAMPLE_RATE for j in scheduler.of(Priority.INTERIM)]
    late = WINDOW / SAMPLE_RATE  # a window in progress when the silence began
    assert len(ends) >= 2
    assert not [e for e in ends if 1.95 + late < e <= 2.35]
    assert not [e for e in ends if e > 3.5 + late]


@dataclass
class LanguageScheduler(FakeScheduler):
    """Detects `detected` (with German second) unless told a language; records the languages."""

    detected: str = "en"
    asked: list[str | None] = field(default_factory=list)

    async def transcribe(
        self,
        audio: np.ndarray,
        options: dict[str, Any],
        priority: Priority,
        *,
        owner: Any = None,
        encoder_window_s: float | None = None,
    ) -> DecodeResult:
        self.asked.append(options["language"])
        result = await super().transcribe(
            audio, options, priority, owner=owner, encoder_window_s=encoder_window_s
        )
        language = options["language"] or self.detected
        probs = [(self.detected, 0.6), ("de", 0.3), ("fr", 0.1)]
        result.info = SimpleNamespace(language=language, all_language_probs=probs)
        return result


@pytest.mark.parametrize(
    ("allowed", "detected", "asked", "reported"),
    [
        ((), "it", [None], "it"),  # no restriction: what was detected
        (("fr", "it"), "it", [None], "it"),  # detected an allowed one: one decode
        (("fr", "de"), "it", [None, "de"], "de"),  # a miss: again in the likeliest allowed one
    ],
)
async def test_finals_are_decoded_in_an_allowed_language(
    allowed: tuple[str, ...], detected: str, asked: list[str | None], reported: str
) -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scheduler = LanguageScheduler(detected=detected)
    session = StreamSession(
        "s1",
        protocol.StreamConfig(language=None, allowed_languages=allowed, interim_results=False),
        scheduler=scheduler,
        settings=SidecarSettings(),
        metrics=SidecarMetrics(),
        send=send,
        vad=LoudnessVAD(),
    )
    data = (np.concatenate([pcm(0.5, 0), pcm(1.0, SPEECH), pcm(1.0, 0)]) * 32768).astype("<i2")
    for begin in range(0, data.size, FRAME):
        session.feed(data[begin : begin + FRAME].tobytes())
        await asyncio.sleep(0)
    await session.finish(protocol.closed())
    (final,) = [m for m in sent if m["type"] == "final"]
    assert final["language"] == reported
    assert scheduler.asked == asked
