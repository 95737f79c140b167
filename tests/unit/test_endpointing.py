"""Adaptive endpointing and context across utterances, driven without a model: a fake scheduler
that answers with a chosen text (after a chosen delay) and the loudness VAD of
test_stream_session.py."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from faster_whisper.transcribe import Segment, Word

from stt_sidecar import languages as languages_module
from stt_sidecar.audio_format import SAMPLE_RATE
from stt_sidecar.config import SidecarSettings
from stt_sidecar.languages import Languages
from stt_sidecar.metrics import SidecarMetrics
from stt_sidecar.scheduler import DecodeResult, Priority
from stt_sidecar.streaming import protocol
from stt_sidecar.streaming import session as session_module
from stt_sidecar.streaming.context import (
    MAX_CONTEXT_CHARS,
    UtteranceContext,
    final_runaway,
    looks_repetitive,
    repeats_a_run,
    runaway,
    said_twice,
)
from stt_sidecar.streaming.endpointing import Endpoint, EndpointPolicy, classify
from stt_sidecar.streaming.session import SPEECH_CONTINUE, SPEECH_ONSET, StreamSession
from stt_sidecar.streaming.vad import WINDOW

from .test_stream_session import FRAME, SPEECH, LoudnessVAD, pcm
from .whisper_results import segment_of


@pytest.mark.parametrize(
    ("text", "endpoint"),
    [
        ("Ask what you can do for your country.", Endpoint.SHORT),
        ("Is it ready?", Endpoint.SHORT),
        ("And so, my fellow Americans,", Endpoint.LONG),
        ("he had then leisure to", Endpoint.LONG),
        ("He was not an ill-disposed young man and", Endpoint.LONG),
        ("I went to the.", Endpoint.LONG),  # whisper's period does not finish "the"
        ("So what I want is, um", Endpoint.LONG),
        ("wait for it...", Endpoint.LONG),
        ("go forward ten meters", Endpoint.LONG),  # no stop: whisper heard a part
        ("He might have been made more respectable than he was.", Endpoint.SHORT),
        ("No.", Endpoint.SHORT),
        ("I want to.", Endpoint.SHORT),
        ("", Endpoint.LONG),  # no words heard yet
        (None, Endpoint.DEFAULT),  # no text to judge by: a failed decode
    ],
)
def test_the_text_rule(text: str | None, endpoint: Endpoint) -> None:
    assert classify(text) is endpoint


def test_how_sure_whisper_is_of_the_stop_picks_the_silence() -> None:
    # the stop's own probability, as tiny.en gave it on the pauses set
    assert classify("Ask what you can do for your country.", 0.83) is Endpoint.SHORT
    assert classify("He was not an ill-disposed young man.", 0.44) is Endpoint.DEFAULT
    assert classify("He might even have been.", 0.30) is Endpoint.LONG  # "made amiable..."
    assert classify("And Mr. John.", 0.23) is Endpoint.LONG  # "Dashwood had then..."
    assert classify("and the", 0.99) is Endpoint.LONG  # no stop: the rule on the words


def test_a_stop_with_no_probability_of_its_own_is_judged_by_the_last_word() -> None:
    # Whisper wrote it in one token with a quote (`go."`): the word's probability, as before
    assert classify('He said "go."', None, 0.95) is Endpoint.SHORT
    assert classify('He said "go."', None, 0.7) is Endpoint.DEFAULT
    assert classify("He said go.") is Endpoint.SHORT  # nothing known: not held back


def test_fixed_policy_is_the_configured_silence_for_everything() -> None:
    policy = EndpointPolicy.from_ms(adaptive=False, default_ms=450, short_ms=220, long_ms=900)
    assert {policy.silence_for(e) for e in Endpoint} == {7200}
    assert policy.speculate == 2400  # 150 ms, as before adaptive endpointing
    adaptive = EndpointPolicy.from_ms(adaptive=True, default_ms=450, short_ms=220, long_ms=900)
    assert (adaptive.short, adaptive.default, adaptive.long) == (3520, 7200, 14400)
    assert SidecarSettings().endpoint_long_ms == 1100
    assert adaptive.speculate == 2400


@dataclass
class TextScheduler:
    """Answers every decode with `text`, after `delay` seconds; records options and sizes."""

    text: str = "hello"
    probability: float = 0.95  # of each word
    stop_probability: float = 0.9  # of a stop ending `text`, a word apart as final_options asks
    delay: float = 0.0
    jobs: list[tuple[Priority, int, dict[str, Any]]] = field(default_factory=list)
    batch_running: bool = False
    english_only: bool = True
    queue_depth: int = 0
    busy: Any = field(default_factory=lambda: SimpleNamespace(fraction=lambda: 0.0))
    texts: list[str] | None = None  # successive answers instead of `text`
    gate: asyncio.Event | None = None  # when given, decodes finish once it is set

    async def transcribe(
        self,
        audio: np.ndarray,
        options: dict[str, Any],
        priority: Priority,
        *,
        owner: Any = None,
        encoder_window_s: float | None = None,
    ) -> DecodeResult:
        self.jobs.append((priority, audio.size, options))
        text = self.texts.pop(0) if self.texts else self.text
        await asyncio.sleep(self.delay)
        if self.gate is not None:
            await self.gate.wait()
        # said near the end of the audio: a continuation's context (before it) keeps it
        seconds = audio.size / SAMPLE_RATE
        start, end = max(0.0, seconds - 0.6), max(0.0, seconds - 0.4)
        words = [Word(start=start, end=end, word=" " + text, probability=self.probability)]
        stop = text[-1:]
        if text[:-1].strip() and stop in ".?!" and options.get("word_timestamps"):
            assert stop not in options["append_punctuations"]  # final_options keeps it apart
            words = [
                dataclasses.replace(words[0], word=" " + text[:-1]),
                Word(start=end, end=end, word=stop, probability=self.stop_probability),
            ]
        return DecodeResult([segment_of(words)], SimpleNamespace(language="en"), 0.01, 0.0)


@dataclass
class Run:
    sent: list[dict[str, Any]]
    scheduler: TextScheduler
    metrics: SidecarMetrics
    closes: list[int]  # the sample each utterance was closed at
    speculations: list[int]  # the sample each speculative decode was started at
    heard: list[int]  # how much audio the VAD had seen at each close

    @property
    def finals(self) -> list[dict[str, Any]]:
        return [m for m in self.sent if m["type"] == "final"]

    def endpoints(self, decision: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "stt_endpoints_total", {"decision": decision}
        )
        return value or 0.0


def new_session(
    scheduler: TextScheduler,
    send: Any = None,
    *,
    interim_results: bool = False,
    **settings: Any,
) -> StreamSession:
    """A session on the loudness VAD and `scheduler`; `send` drops messages unless given."""
    return StreamSession(
        "s1",
        protocol.StreamConfig(interim_results=interim_results),
        scheduler=scheduler,
        settings=SidecarSettings(**settings),
        metrics=SidecarMetrics(),
        send=send or (lambda message: asyncio.sleep(0)),
        vad=LoudnessVAD(),
    )


async def run(
    audio: np.ndarray,
    scheduler: TextScheduler,
    *,
    config: protocol.StreamConfig | None = None,
    open_gate_at: float | None = None,
    **settings: Any,
) -> Run:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    metrics = SidecarMetrics()
    session = StreamSession(
        "s1",
        config or protocol.StreamConfig(interim_results=False),
        scheduler=scheduler,
        settings=SidecarSettings(**settings),
        metrics=metrics,
        send=send,
        vad=LoudnessVAD(),
    )
    result = Run(sent, scheduler, metrics, [], [], [])
    close, speculate = session._close_utterance, session._speculate

    def spy_close(end: int) -> None:
        result.closes.append(end)
        result.heard.append(session._vad_cursor)
        close(end)

    def spy_speculate(utterance: Any, end: int) -> None:
        result.speculations.append(end)
        speculate(utterance, end)

    session._close_utterance = spy_close  # type: ignore[method-assign]
    session._speculate = spy_speculate  # type: ignore[method-assign]
    data = (audio * 32768).astype("<i2")
    for begin in range(0, data.size, FRAME):
        session.feed(data[begin : begin + FRAME].tobytes())
        if open_gate_at is not None and begin >= open_gate_at * SAMPLE_RATE:
            assert scheduler.gate is not None
            scheduler.gate.set()
        await asyncio.sleep(0)  # let decodes and the sender run, as between client frames
    await session.finish(protocol.closed())
    return result


def fixed_rule(audio: np.ndarray, endpoint_ms: int) -> tuple[list[int], list[int]]:
    """The fixed endpoint as it was before adaptive endpointing: (closes, speculations)."""
    probs = LoudnessVAD().process(audio)
    endpoint = int(endpoint_ms / 1000 * SAMPLE_RATE)
    speculative = min(int(0.15 * SAMPLE_RATE), endpoint)
    closes, speculations = [], []
    speaking, silence, speech_end, speculated = False, 0, 0, False
    for i, p in enumerate(probs):
        end = (i + 1) * WINDOW
        if not speaking:
            if p >= SPEECH_ONSET:
                speaking, silence, speech_end, speculated = True, 0, end, False
            continue
        if p >= SPEECH_CONTINUE:
            speech_end, silence, speculated = end, 0, False
        else:
            silence += WINDOW
        if silence >= endpoint:
            closes.append(min(end, speech_end + int(0.3 * SAMPLE_RATE)))
            speaking = False
        elif silence >= speculative and not speculated:
            speculations.append(end)
            speculated = True
    return closes, speculations


def random_speech(seed: int) -> np.ndarray:
    """Speech bursts of 0.3-2 s with pauses of 0.05-1.2 s."""
    rng = random.Random(seed)
    parts = [pcm(0.3, 0)]
    for _ in range(8):
        parts += [pcm(rng.uniform(0.3, 2.0), SPEECH), pcm(rng.uniform(0.05, 1.2), 0)]
    return np.concatenate([*parts, pcm(1.0, 0)])


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("text", ["Done.", "and the", "hello"])
async def test_adaptive_off_decides_exactly_as_the_fixed_endpoint(seed: int, text: str) -> None:
    audio = random_speech(seed)
    closes, speculations = fixed_rule(audio, 450)
    got = await run(audio, TextScheduler(text=text), adaptive_endpointing=False)
    assert got.closes[: len(closes)] == closes
    assert got.speculations == speculations
    # and the same through the per-stream key, whatever the server default
    config = protocol.StreamConfig(interim_results=False, endpointing="fixed")
    got = await run(audio, TextScheduler(text=text), config=config, adaptive_endpointing=True)
    assert got.closes[: len(closes)] == closes
    assert got.endpoints("short") == got.endpoints("long") == 0


async def test_a_finished_sentence_ends_after_the_short_silence() -> None:
    # a 300 ms pause after a finished sentence ends it; the fixed 450 ms would wait on
    audio = np.concatenate(
        [pcm(0.5, 0), pcm(1.0, SPEECH), pcm(0.3, 0), pcm(1.0, SPEECH), pcm(1, 0)]
    )
    scheduler = RewritingScheduler(
        text="I am done.", rewrite={2: heard_after("I am done.", "I am done.")}
    )
    adaptive = await run(audio, scheduler)
    assert len(adaptive.finals) == 2 and adaptive.endpoints("short") == 2
    fixed = await run(audio, TextScheduler(text="I am done."), adaptive_endpointing=False)
    assert len(fixed.finals) == 1 and fixed.endpoints("default") == 1
    # ended 220 ms into the pause (within a VAD window), with the speculative decode as final
    first_close = adaptive.closes[0] / SAMPLE_RATE
    assert 1.5 + 0.22 <= first_close <= 1.5 + 0.22 + WINDOW / SAMPLE_RATE
    assert len(adaptive.scheduler.jobs) == 2  # both speculations were used


async def test_an_unfinished_sentence_waits_the_long_silence() -> None:
    # a 700 ms pause after "... to" does not end the utterance; the fixed 450 ms splits it
    audio = np.concatenate(
        [pcm(0.5, 0), pcm(1.0, SPEECH), pcm(0.7, 0), pcm(1.0, SPEECH), pcm(1, 0)]
    )
    adaptive = await run(audio, TextScheduler(texts=["he had then leisure to", "consider."]))
    assert len(adaptive.finals) == 1
    assert adaptive.endpoints("short") == 1 and adaptive.endpoints("long") == 0
    fixed = await run(
        audio, TextScheduler(text="he had then leisure to"), adaptive_endpointing=False
    )
    assert len(fixed.finals) == 2
    # a pause longer than the long silence still ends it
    audio = np.concatenate(
        [pcm(0.5, 0), pcm(1.0, SPEECH), pcm(1.2, 0), pcm(1.0, SPEECH), pcm(1.2, 0)]
    )
    adaptive = await run(audio, TextScheduler(text="and the"))
    assert len(adaptive.finals) == 2 and adaptive.endpoints("long") == 2


async def test_speech_with_no_words_heard_yet_waits_the_long_silence() -> None:
    # "He" alone, a 700 ms pause, then the rest: ending at the pause would lose "He"
    audio = np.concatenate(
        [pcm(0.5, 0), pcm(0.3, SPEECH), pcm(0.7, 0), pcm(1.5, SPEECH), pcm(1, 0)]
    )
    texts = ["", "He might even have been made amiable himself."]
    adaptive = await run(audio, TextScheduler(texts=list(texts)))
    assert [f["text"] for f in adaptive.finals] == [texts[1]] and len(adaptive.closes) == 1
    assert adaptive.endpoints("short") == 1 and adaptive.endpoints("default") == 0
    fixed = await run(audio, TextScheduler(texts=list(texts)), adaptive_endpointing=False)
    assert [f["text"] for f in fixed.finals] == [texts[1]]  # "He" went with the empty final
    assert fixed.endpoints("default") == 2


async def test_longer_sound_with_no_words_keeps_the_configured_silence() -> None:
    # 1.5 s that Whisper makes no words of is noise, not a first word: it must not hold the
    # utterance open for the long silence
    audio = np.concatenate(
        [pcm(0.5, 0), pcm(1.5, SPEECH), pcm(0.7, 0), pcm(1.5, SPEECH), pcm(1, 0)]
    )
    got = await run(audio, TextScheduler(texts=["", "Go forward 10 meters."]))
    assert [f["text"] for f in got.finals] == ["Go forward 10 meters."]
    assert len(got.closes) == 2 and got.endpoints("default") == 1


async def test_other_text_ends_after_the_configured_silence() -> None:
    audio = np.concatenate(
        [pcm(0.5, 0), pcm(1.0, SPEECH), pcm(0.6, 0), pcm(1.0, SPEECH), pcm(1, 0)]
    )
    got = await run(audio, TextScheduler(text="Go forward 10 years.", stop_probability=0.4))
    assert len(got.finals) == 2 and got.endpoints("default") == 2


@pytest.mark.parametrize(
    ("text", "finals"), [("Done.", 2), ("he had then leisure to", 1), ("go forward", 1)]
)
async def test_a_decode_slower_than_the_audio_gives_the_same_utterances(
    text: str, finals: int
) -> None:
    # The speculative text of the first part is only known once the pause and the speech after
    # it have arrived: the audio waits for it, and the text still decides.
    audio = np.concatenate(
        [pcm(0.5, 0), pcm(1.0, SPEECH), pcm(0.6, 0), pcm(1.0, SPEECH), pcm(1, 0)]
    )
    prompt = await run(audio, TextScheduler(text=text))
    late = await run(audio, TextScheduler(text=text, gate=asyncio.Event()), open_gate_at=2.8)
    assert len(prompt.finals) == len(late.finals) == finals
    assert late.closes == prompt.closes


async def test_audio_held_for_a_decision_slows_the_client_down() -> None:
    session = new_session(TextScheduler(gate=(gate := asyncio.Event())))
    audio = np.concatenate([pcm(0.5, 0), pcm(1.0, SPEECH), pcm(3.0, 0)])
    session.feed((audio * 32768).astype("<i2").tobytes())
    backlog = asyncio.create_task(session.wait_for_backlog())
    done, _ = await asyncio.wait({backlog}, timeout=0.05)
    assert not done  # ~2.7 s of audio waits for the text: the handler stops reading
    gate.set()
    await backlog
    await session.finish(None)


# -- context across utterances ------------------------------------------------------------


def test_context_is_bounded_recent_and_reset() -> None:
    context = UtteranceContext(enabled=True, base_prompt="Kim")
    assert context.prompt(0.0) == "Kim"
    context.add("First sentence.", 2.0, "en")
    context.add("Second one.", 4.0, "en")
    assert context.prompt(5.0) == "Kim First sentence. Second one."
    for i in range(40):
        context.add(f"Sentence number {i} goes here.", 5.0 + i, "en")
    prompt = context.prompt(50.0)
    assert prompt is not None and len(prompt) <= len("Kim ") + MAX_CONTEXT_CHARS
    assert prompt.endswith("Sentence number 39 goes here.")
    assert context.prompt(50.0 + 25.0) == "Kim"  # a long silence starts a new context
    context.add("Hola.", 80.0, "es")
    context.add("Hello.", 81.0, "en")  # another language: the Spanish is not carried over
    assert context.prompt(82.0) == "Kim Hello."
    context.add("the the the the the the the the the the the the the the the", 83.0, "en")
    assert context.prompt(84.0) == "Kim"  # a loop is never fed back


def test_disabled_context_keeps_the_clients_prompt_alone() -> None:
    context = UtteranceContext(enabled=False, base_prompt=None)
    context.add("First sentence.", 2.0, "en")
    assert context.prompt(3.0) is None


def test_looks_repetitive() -> None:
    assert looks_repetitive("go forward " * 20)
    assert not looks_repetitive("Ask not what your country can do for you.")


def test_a_run_of_words_said_twice_is_a_loop() -> None:
    loop = (
        "What your country can do for you ask what you can do for your country You can do"
        " for you ask what you can do for your country?"
    )
    # neither too long for its audio nor compressible enough for the other tests
    assert repeats_a_run(loop) and final_runaway(loop, 60.0) and not runaway(loop, 60.0)
    speech = (
        "And so my fellow Americans, ask not what your country can do for you, ask what you"
        " can do for your country."
    )
    assert not repeats_a_run(speech)  # a phrase echoed, not six words in a row
    assert not repeats_a_run("no no no no no no")  # a run said twice must not overlap itself
    assert repeats_a_run("no no no no no no no no no no no no")
    # said twice for real: a final is decoded once more, interims are not dropped for it
    twice = "I don't know what to do, I don't know what to do."
    assert final_runaway(twice, 4.0) and not runaway(twice, 4.0)


def test_a_sentence_said_twice() -> None:
    assert said_twice("Go forward 10 meters. Go forward 10 meters.")
    assert said_twice("We will go. We will go. We will go.")
    assert not said_twice("no no")  # two words said again: people do
    assert not said_twice("Go forward 10 meters.")
    assert not said_twice("Go forward 10 meters. Go forward 10 feet.")
    assert not said_twice("")


async def test_finals_are_prompted_with_the_streams_earlier_finals() -> None:
    audio = np.concatenate([pcm(0.5, 0), pcm(1.0, SPEECH), pcm(1.2, 0)] * 3)
    scheduler = TextScheduler(texts=["One.", "Two.", "Three."])
    await run(
        audio,
        scheduler,
        config=protocol.StreamConfig(interim_results=False, prompt="Kim"),
        stream_context=True,
    )
    prompts = [options["initial_prompt"] for _, _, options in scheduler.jobs]
    assert prompts == ["Kim", "Kim One.", "Kim One. Two."]
    off = protocol.StreamConfig(
        interim_results=False, prompt="Kim", condition_on_previous_text=False
    )
    scheduler = TextScheduler(texts=["One.", "Two.", "Three."])
    await run(audio, scheduler, config=off, stream_context=True)  # the stream says no
    assert [options["initial_prompt"] for _, _, options in scheduler.jobs] == ["Kim"] * 3


@pytest.fixture
def english_only(monkeypatch: pytest.MonkeyPatch) -> Languages:
    # Whisper's code list lives in faster_whisper, which unit tests do not import.
    monkeypatch.setattr(languages_module, "whisper_language_codes", lambda: frozenset({"en"}))
    return Languages(english_only=True)


@pytest.mark.parametrize(
    ("key", "value"),
    [("endpointing", "fast"), ("endpointing", True), ("condition_on_previous_text", "yes")],
)
def test_bad_config_values_are_refused(key: str, value: object, english_only: Languages) -> None:
    import json

    raw = json.dumps({"type": "config", key: value})
    with pytest.raises(protocol.ProtocolViolation) as caught:
        protocol.parse_config(raw, languages=english_only)
    assert caught.value.code == protocol.INVALID_CONFIG and key in caught.value.message


def test_config_keys_are_parsed(english_only: Languages) -> None:
    raw = '{"type": "config", "endpointing": "fixed", "condition_on_previous_text": false}'
    config = protocol.parse_config(raw, languages=english_only)
    assert config.endpointing == "fixed" and config.condition_on_previous_text is False
    config = protocol.parse_config('{"type": "config"}', languages=english_only)
    assert config.endpointing is None and config.condition_on_previous_text is None


def test_settings_from_env() -> None:
    settings = SidecarSettings.from_env(
        {
            "STT_ADAPTIVE_ENDPOINTING": "off",
            "STT_STREAM_CONTEXT": "no",
            "STT_ENDPOINT_LONG_MS": "1200",
        }
    )
    assert not settings.adaptive_endpointing and not settings.stream_context
    assert settings.endpoint_long_ms == 1200
    defaults = SidecarSettings.from_env({})
    assert defaults.adaptive_endpointing and not defaults.stream_context


def test_a_repeating_speaker_gives_a_prompt_of_one_final() -> None:
    context = UtteranceContext(enabled=True, base_prompt=None)
    for i in range(6):
        context.add("Go forward ten meters.", float(i), "en")
    assert context.prompt(7.0) == "Go forward ten meters."


async def test_a_final_that_runs_away_with_its_context_is_decoded_alone() -> None:
    # the second utterance's decode (prompted with the first final) loops: it is redone
    # without the context, and the loop is never sent
    audio = np.concatenate([pcm(0.5, 0), pcm(1.0, SPEECH), pcm(1.2, 0)] * 2)
    loop = " ".join(["go forward"] * 30)
    scheduler = TextScheduler(texts=["Go forward.", loop, "Go forward again."])
    got = await run(audio, scheduler, stream_context=True)
    assert [f["text"] for f in got.finals] == ["Go forward.", "Go forward again."]
    assert [options["initial_prompt"] for _, _, options in scheduler.jobs] == [
        None,
        "Go forward.",
        None,
    ]


async def test_a_text_that_never_comes_does_not_stall_the_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # an overloaded decoder: past MAX_TEXT_WAIT_S the pause is judged as the fixed endpoint
    # would (here: the 600 ms pause ends the utterance at 450 ms), and audio flows again
    monkeypatch.setattr(session_module, "MAX_TEXT_WAIT_S", 0.0)
    audio = np.concatenate(
        [pcm(0.5, 0), pcm(1.0, SPEECH), pcm(0.6, 0), pcm(1.0, SPEECH), pcm(1, 0)]
    )
    got = await run(audio, TextScheduler(text="and the", gate=asyncio.Event()), open_gate_at=3.5)
    assert len(got.finals) == 2 and got.endpoints("default") >= 1


async def test_the_wait_for_the_text_ends_when_no_audio_comes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Held audio stops the reading of the client, so no frame comes to notice the deadline:
    # a timer must end the wait, or a slow decoder would stall the stream for its whole decode.
    monkeypatch.setattr(session_module, "MAX_TEXT_WAIT_S", 0.05)
    session = StreamSession(
        "s1",
        protocol.StreamConfig(interim_results=False),
        scheduler=TextScheduler(gate=asyncio.Event()),  # the text never comes
        settings=SidecarSettings(),
        metrics=SidecarMetrics(),
        send=lambda message: asyncio.sleep(0),
        vad=LoudnessVAD(),
    )
    audio = np.concatenate([pcm(0.5, 0), pcm(1.0, SPEECH), pcm(3.0, 0)])
    session.feed((audio * 32768).astype("<i2").tobytes())
    await asyncio.wait_for(session.wait_for_backlog(), 5)  # a hang check, not a timing
    assert not session._held
    await session.aclose()


async def test_clear_drops_the_windows_held_for_a_decision() -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    session = new_session(TextScheduler(gate=asyncio.Event()), send)
    # a pause past the short silence (windows held for the text), then speech again
    speech = np.concatenate([pcm(1.0, SPEECH), pcm(0.3, 0), pcm(0.5, SPEECH)])
    session.feed((speech * 32768).astype("<i2").tobytes())
    assert session._held
    session.clear({"type": "cleared"})
    session.feed((pcm(0.2, 0) * 32768).astype("<i2").tobytes())
    await session.finish(None)
    # the cleared speech never comes back as an utterance of its own
    assert [m["type"] for m in sent] == ["speech_started", "cleared"], sent


def two_utterances(first_s: float = 1.0, pause_s: float = 0.3) -> np.ndarray:
    """Speech, a pause, speech again: the second utterance continues the first."""
    return np.concatenate(
        [pcm(0.5, 0), pcm(first_s, SPEECH), pcm(pause_s, 0), pcm(1.0, SPEECH), pcm(1, 0)]
    )


def continuations(got: Run, outcome: str) -> float:
    value = got.metrics.registry.get_sample_value("stt_continuations_total", {"outcome": outcome})
    return value or 0.0


@dataclass
class RewritingScheduler(TextScheduler):
    """A TextScheduler whose n-th decode (1-based) has its segments rewritten."""

    rewrite: dict[int, Callable[[float], list[Segment]]] = field(default_factory=dict)

    async def transcribe(self, audio: np.ndarray, *args: Any, **kwargs: Any) -> DecodeResult:
        result = await super().transcribe(audio, *args, **kwargs)
        rewrite = self.rewrite.get(len(self.jobs))
        if rewrite is not None:
            result.segments[:] = rewrite(audio.size / SAMPLE_RATE)
        return result


def segment(text: str, start: float, end: float) -> Segment:
    """Whisper's segment for `text`, its words evenly spread over start..end."""
    said = text.split()
    step = (end - start) / len(said)
    words = [
        Word(start=start + i * step, end=start + (i + 1) * step, word=" " + w, probability=0.9)
        for i, w in enumerate(said)
    ]
    return segment_of(words)


def heard_after(earlier: str, text: str) -> Callable[[float], list[Segment]]:
    """A continuation's decode as Whisper gives it: the earlier utterance's words in its audio
    at the start, then the new utterance's near the end."""
    return lambda seconds: [segment(earlier, 0.5, 1.2), segment(text, seconds - 0.6, seconds - 0.4)]


@pytest.mark.parametrize(("pause_s", "continued"), [(0.3, True), (1.6, False)])
async def test_a_continuation_is_decoded_after_the_previous_utterance(
    pause_s: float, continued: bool
) -> None:
    # "I am done." ends after 220 ms; speech again 80 ms later is decoded after its audio
    audio = two_utterances(pause_s=pause_s)
    texts = ["I am done.", "Really."]
    continued_decode = {2: heard_after(*texts)} if continued else {}
    runs = [
        await run(
            audio,
            RewritingScheduler(texts=list(texts), rewrite=rewrite),
            continuation_gap_ms=gap,
        )
        for rewrite, gap in ((continued_decode, 1000), ({}, 0))
    ]
    for got in runs:
        assert [f["text"] for f in got.finals] == ["I am done.", "Really."]
    sizes = [[size for _, size, _ in got.scheduler.jobs] for got in runs]
    assert (sizes[0] != sizes[1]) is continued
    if continued:  # the second decode heard the first utterance, then the pause, then itself
        assert sizes[0][1] > sizes[1][0] + sizes[1][1]
    # the kept word has its stream time, whatever audio came before it in the decode
    assert runs[0].finals[1]["start"] == runs[1].finals[1]["start"]
    assert continuations(runs[0], "kept") == (1 if continued else 0)


async def test_a_continuation_with_no_word_of_its_own_is_decoded_again_alone() -> None:
    # the decode after the first utterance puts its one word in the first: no final of its own
    scheduler = RewritingScheduler(
        texts=["I am done.", "Wait", "Really."],
        rewrite={2: lambda seconds: [segment("Wait", 0.1, 0.3)]},
    )
    got = await run(two_utterances(), scheduler)
    assert [f["text"] for f in got.finals] == ["I am done.", "Really."]
    sizes = [size for _, size, _ in got.scheduler.jobs]
    assert len(sizes) == 3 and sizes[1] > sizes[2]
    assert continuations(got, "alone") == 1


async def test_a_continuation_with_no_word_in_the_earlier_audio_is_decoded_again_alone() -> None:
    # its word times are off: tiny.en put the earlier "Ask" after the boundary, and it came
    # out twice ("Ask!", then "Ask... NOT!")
    scheduler = RewritingScheduler(
        texts=["Ask!", "", "Not!"],
        rewrite={2: lambda seconds: [segment("Ask... NOT!", seconds - 0.9, seconds - 0.4)]},
    )
    got = await run(two_utterances(), scheduler)
    assert [f["text"] for f in got.finals] == ["Ask!", "Not!"]
    sizes = [size for _, size, _ in got.scheduler.jobs]
    assert len(sizes) == 3 and sizes[1] > sizes[2]
    assert continuations(got, "alone") == 1 and continuations(got, "kept") == 0


async def test_a_continuation_that_says_its_sentence_twice_is_decoded_again_alone() -> None:
    # seen once in a test run: the rest of the decode was right, the new words doubled
    twice = "Go forward 10 meters. Go forward 10 meters."
    scheduler = RewritingScheduler(
        texts=["He was not an ill-disposed young man.", "", "Go forward 10 meters."],
        rewrite={2: heard_after("He was not an ill-disposed young man.", twice)},
    )
    got = await run(two_utterances(), scheduler)
    assert [f["text"] for f in got.finals][1] == "Go forward 10 meters."
    assert continuations(got, "alone") == 1


async def test_a_stream_detecting_languages_decodes_each_utterance_alone() -> None:
    # the earlier audio would pick the language of the continuation too
    config = protocol.StreamConfig(interim_results=False, language=None)
    scheduler = TextScheduler(texts=["I am done.", "Really."])
    got = await run(two_utterances(), scheduler, config=config)
    assert [f["text"] for f in got.finals] == ["I am done.", "Really."]
    first, second = (size for _, size, _ in got.scheduler.jobs)
    assert second < first + 0.3 * SAMPLE_RATE


async def test_a_continuation_that_loops_in_its_own_words_is_decoded_again_alone() -> None:
    # the loop is in the new utterance's words only; the whole decode would not look like one
    earlier = "whether tis nobler in the mind to suffer the slings and arrows of outrageous fortune"
    loop = " ".join(["no"] * 14)
    scheduler = RewritingScheduler(
        texts=["I am done.", "", "Really."],
        rewrite={
            2: lambda seconds: [
                segment(earlier, 0.3, seconds - 1.3),
                segment(loop, seconds - 1.2, seconds - 0.3),
            ]
        },
    )
    got = await run(two_utterances(first_s=8.0), scheduler)
    assert [f["text"] for f in got.finals] == ["I am done.", "Really."]
    sizes = [size for _, size, _ in got.scheduler.jobs]
    assert len(sizes) == 3 and sizes[2] <= sizes[1] - 8 * SAMPLE_RATE  # without the context
    assert continuations(got, "alone") == 1
