"""The realtime protocol's pieces without a model: client event validation, both session
shapes, G.711 decoding, the append-only deltas and the event translation, and the
per-stream endpointing overrides `turn_detection` sets on a `StreamSession`."""

from __future__ import annotations

import asyncio
import base64
import itertools
import warnings
from typing import Any

import numpy as np
import pytest

from stt_sidecar.audio_format import SAMPLE_RATE
from stt_sidecar.config import SidecarSettings
from stt_sidecar.languages import Languages
from stt_sidecar.metrics import SidecarMetrics
from stt_sidecar.realtime import events
from stt_sidecar.realtime.audio_formats import PCMA, PCMU, alaw_to_pcm16, ulaw_to_pcm16
from stt_sidecar.realtime.events import RealtimeError
from stt_sidecar.realtime.session_config import RealtimeConfig, apply_update, render
from stt_sidecar.realtime.translator import AppendOnlyText, EventTranslator
from stt_sidecar.streaming import protocol
from stt_sidecar.streaming.session import EndpointingOverrides, StreamSession

from ..support.realtime import ulaw_encode
from .test_stream_session import FRAME, SPEECH, FakeScheduler, LoudnessVAD, pcm

EN = Languages(english_only=True)
MULTI = Languages(english_only=False)


# -- audio formats ------------------------------------------------------------------------
def test_g711_tables_match_the_reference_decoder() -> None:
    every_code = bytes(range(256))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop  # the reference; deprecated, so only here

        assert ulaw_to_pcm16(every_code) == audioop.ulaw2lin(every_code, 2)
        assert alaw_to_pcm16(every_code) == audioop.alaw2lin(every_code, 2)
    # the tests' encoder: decoding gives the input back within one μ-law step
    ramp = np.linspace(-32000, 32000, 4001).astype("<i2")
    back = np.frombuffer(ulaw_to_pcm16(ulaw_encode(ramp)), "<i2").astype(int)
    assert np.all(np.abs(back - ramp) <= np.abs(ramp.astype(int)) / 16 + 8)
    assert PCMU.sample_rate == PCMA.sample_rate == 8000


# -- client events ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "code", "param"),
    [
        ("{not json", events.INVALID_JSON, None),
        ("[1, 2]", events.INVALID_JSON, None),
        ('{"type": NaN}', events.INVALID_JSON, None),
        ('{"type": "response.create"}', events.INVALID_VALUE, "type"),
        ('{"audio": "AAAA"}', events.INVALID_VALUE, "type"),
    ],
)
def test_bad_client_events_are_named(raw: str, code: str, param: str | None) -> None:
    with pytest.raises(RealtimeError) as caught:
        events.parse_client_event(raw)
    assert (caught.value.code, caught.value.param) == (code, param)
    shaped = events.error_event(caught.value)
    assert shaped["type"] == "error" and shaped["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("audio", "code"),
    [
        ("not base64!", events.INVALID_VALUE),
        (5, events.INVALID_VALUE),
        (base64.b64encode(b"\0" * 3).decode(), events.INVALID_VALUE),  # half a sample
        (base64.b64encode(b"\0" * 1002).decode(), events.APPEND_TOO_LARGE),
    ],
)
def test_bad_audio_is_refused(audio: Any, code: str) -> None:
    event = {"type": "input_audio_buffer.append", "audio": audio}
    with pytest.raises(RealtimeError) as caught:
        events.decode_audio(event, max_bytes=1000, sample_bytes=2)
    assert caught.value.code == code and caught.value.param == "audio"


def test_audio_decodes() -> None:
    event = {"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\1\2" * 4).decode()}
    assert events.decode_audio(event, max_bytes=1000, sample_bytes=2) == b"\1\2" * 4


# -- session shapes -----------------------------------------------------------------------
def update(session: dict[str, Any], *, beta: bool = False, config: RealtimeConfig | None = None):
    kind = "transcription_session.update" if beta else "session.update"
    return apply_update(
        config or RealtimeConfig(),
        {"type": kind, "session": session},
        languages=EN,
        served="tiny.en",
    )


def test_current_shape_sets_everything() -> None:
    config = update(
        {
            "type": "transcription",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcmu"},
                    "transcription": {
                        "model": "gpt-4o-mini-transcribe",
                        "language": "en",
                        "prompt": "Dashwood",
                        "keywords": ["Norland"],
                    },
                    "turn_detection": {
                        "type": "server_vad",
                        "threshold": 0.6,
                        "prefix_padding_ms": 300,
                        "silence_duration_ms": 700,
                    },
                    "noise_reduction": None,
                }
            },
            "include": ["item.input_audio_transcription.logprobs"],
        }
    )
    assert config.format is PCMU and config.logprobs
    assert (config.prompt, config.keywords) == ("Dashwood", ("Norland",))
    assert config.endpointing(450) == EndpointingOverrides(
        onset=0.6, pre_roll_s=0.3, silence_ms=700
    )
    # the reported default sent back (a client echoing the session) keeps adaptive endpointing
    assert config.endpointing(700) == EndpointingOverrides(onset=0.6, pre_roll_s=0.3)
    stream = config.stream_config()
    assert (stream.sample_rate, stream.prompt, stream.keywords) == (8000, "Dashwood", ("Norland",))
    shown = render(config, session_id="s", served="tiny.en", endpoint_silence_ms=450, beta=False)
    assert shown["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert shown["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 700
    assert shown["audio"]["input"]["transcription"]["model"] == "gpt-4o-mini-transcribe"


def test_beta_shape_and_omitted_fields_keep_their_value() -> None:
    first = update(
        {"input_audio_format": "g711_alaw", "input_audio_transcription": {"prompt": "x"}},
        beta=True,
    )
    assert first.format is PCMA and first.prompt == "x"
    second = update({"turn_detection": None}, beta=True, config=first)
    assert second.format is PCMA and second.prompt == "x"
    assert second.endpointing(450) == EndpointingOverrides(manual=True)
    shown = render(second, session_id="s", served="tiny.en", endpoint_silence_ms=450, beta=True)
    assert shown["input_audio_format"] == "g711_alaw" and shown["turn_detection"] is None
    # semantic_vad: served by the default endpointing
    third = update({"turn_detection": {"type": "semantic_vad"}}, beta=True, config=second)
    assert third.endpointing(450) == EndpointingOverrides()


def test_default_session_reports_the_servers_endpointing() -> None:
    shown = render(
        RealtimeConfig(), session_id="s", served="tiny.en", endpoint_silence_ms=450, beta=False
    )
    assert shown["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert shown["audio"]["input"]["turn_detection"] == {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": 400,
        "silence_duration_ms": 450,
    }


@pytest.mark.parametrize(
    ("session", "beta", "code", "param"),
    [
        ({"type": "realtime"}, False, events.INVALID_VALUE, "session.type"),
        (
            {"audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}},
            False,
            events.INVALID_VALUE,
            "session.audio.input.format.rate",
        ),
        (
            {"audio": {"input": {"format": {"type": "audio/opus"}}}},
            False,
            events.INVALID_VALUE,
            "session.audio.input.format.type",
        ),
        ({"input_audio_format": "mp3"}, True, events.INVALID_VALUE, "session.input_audio_format"),
        (
            {"input_audio_transcription": {"model": "gpt-9"}},
            True,
            events.MODEL_NOT_FOUND,
            "session.input_audio_transcription.model",
        ),
        (
            {"input_audio_transcription": {"language": "de"}},
            True,
            events.INVALID_VALUE,
            "session.input_audio_transcription.language",
        ),
        (
            {"input_audio_transcription": {"keywords": ["x"] * 51}},
            True,
            events.INVALID_VALUE,
            "session.input_audio_transcription.keywords",
        ),
        (
            {"turn_detection": {"silence_duration_ms": 5}},
            True,
            events.INVALID_VALUE,
            "session.turn_detection.silence_duration_ms",
        ),
        (
            {"turn_detection": {"type": "push_to_talk"}},
            True,
            events.INVALID_VALUE,
            "session.turn_detection.type",
        ),
        ({"voice": "alloy"}, True, events.UNKNOWN_PARAMETER, "session.voice"),
        ({"include": ["everything"]}, False, events.INVALID_VALUE, "include"),
    ],
)
def test_bad_sessions_name_the_parameter(
    session: dict[str, Any], beta: bool, code: str, param: str
) -> None:
    with pytest.raises(RealtimeError) as caught:
        update(session, beta=beta)
    assert (caught.value.code, caught.value.param) == (code, param)


@pytest.mark.parametrize(
    "model", ["tiny.en", "whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"]
)
def test_model_aliases(model: str) -> None:
    assert update({"input_audio_transcription": {"model": model}}, beta=True).model == model


def test_multilingual_detects_when_several_languages_are_allowed() -> None:
    event = {
        "type": "session.update",
        "session": {"audio": {"input": {"transcription": {"languages": ["en", "fr"]}}}},
    }
    config = apply_update(RealtimeConfig(), event, languages=MULTI, served="base")
    assert config.language is None


# -- append-only deltas -------------------------------------------------------------------
def test_deltas_are_only_new_stable_words_and_the_final_rest() -> None:
    text = AppendOnlyText()
    assert text.stable("") == ""
    assert text.stable("Had he") == "Had he"
    assert text.stable("Had he") == ""
    assert text.stable("Had he married") == " married"
    # the final spells a stable word differently: what was sent stands, the rest follows
    delta, transcript = text.final("had he married, a more amiable woman.")
    assert delta == " a more amiable woman."
    assert transcript == "Had he married a more amiable woman."
    assert text.sent == transcript


def sent_then_final(stable: str, final_text: str) -> tuple[AppendOnlyText, str, str]:
    text = AppendOnlyText()
    assert text.stable(stable) == stable
    delta, transcript = text.final(final_text)
    assert transcript == stable + delta, "the deltas are a prefix of the transcript"
    return text, delta, transcript


def test_a_final_that_disagrees_keeps_the_deltas_and_goes_on_where_they_end() -> None:
    # seen in CI on tiny.en: the interims agreed on words the whole-utterance decode did not
    text, _, transcript = sent_then_final(
        "How do you marry the more woman",
        "Had he married a more amiable woman, he might have been made still more respectable.",
    )
    assert transcript == (
        "How do you marry the more woman he might have been made still more respectable."
    )
    assert text.diverged
    # per word of the transcript, the final's word it stands for: aligned or past the deltas
    assert text.origin == [None] * 5 + [4, 6, *range(7, 15)]


def test_a_final_with_another_word_keeps_the_sent_one() -> None:
    text, delta, transcript = sent_then_final("Go forward ten", "Go forward 10 meters.")
    assert (delta, transcript) == (" meters.", "Go forward ten meters.")
    assert text.diverged and text.origin == [0, 1, None, 3]


def test_a_final_shorter_than_the_deltas_adds_nothing() -> None:
    text, delta, transcript = sent_then_final("one two three", "one two")
    assert (delta, transcript) == ("", "one two three")
    assert text.diverged


def test_an_empty_final_keeps_the_deltas() -> None:
    text, delta, transcript = sent_then_final("Had he", "")
    assert (delta, transcript) == ("", "Had he")
    assert text.origin == [None, None]


def test_a_final_that_inserts_a_word_in_the_deltas_continues_after_them() -> None:
    text, _, transcript = sent_then_final(
        "Had he married a", "Had he not married a more amiable woman."
    )
    assert transcript == "Had he married a more amiable woman."
    assert text.diverged and text.origin == [0, 1, 3, 4, 5, 6, 7]


def test_a_final_that_drops_a_word_of_the_deltas_continues_after_them() -> None:
    text, _, transcript = sent_then_final(
        "Had he really married a", "Had he married a more amiable woman."
    )
    assert transcript == "Had he really married a more amiable woman."
    assert text.origin == [0, 1, None, 2, 3, 4, 5, 6]


def test_case_and_punctuation_differences_are_agreement() -> None:
    text, _, transcript = sent_then_final("Hello, Mr. Smith", "hello mr smith, how are you?")
    assert transcript == "Hello, Mr. Smith how are you?"
    assert not text.diverged and text.origin == [0, 1, 2, 3, 4, 5]


def test_a_final_after_no_deltas_is_the_transcript() -> None:
    text = AppendOnlyText()
    assert text.final("Go forward.") == ("Go forward.", "Go forward.")
    assert not text.diverged and text.origin == [0, 1]


def ids() -> Any:
    counter = itertools.count(1)
    return lambda: f"item_{next(counter)}"


def types(out: list[dict[str, Any]]) -> list[str]:
    return [
        e["type"].rsplit(".", 1)[-1] if "transcription" in e["type"] else e["type"] for e in out
    ]


def translated(t: EventTranslator, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event for message in messages for event in t.translate(message)]


def final(uid: int, text: str, end: float = 2.0) -> dict[str, Any]:
    words = [{"word": w, "start": 0.0, "end": 0.0, "confidence": 0.5} for w in text.split()]
    return protocol.final(uid, text, 1.0, end, 0.9, "en", words)


def test_logprobs_of_a_diverging_item_describe_the_completed_words() -> None:
    t = EventTranslator(ids(), logprobs=True)
    t.begin(offset_s=0.0, manual=False)
    out = translated(
        t,
        [
            protocol.speech_started(1, 1.0),
            protocol.interim(1, "Go forward ten", "Go forward ten", 1.0, 1.5, "en"),
            final(1, "Go forward 10 meters."),
        ],
    )
    completed = out[-1]
    assert completed["transcript"] == "Go forward ten meters."
    assert "".join(p["token"] for p in completed["logprobs"]) == completed["transcript"]
    # the final's word probabilities (0.5 in `final`), the floor for the word it did not hear
    assert [p["logprob"] for p in completed["logprobs"]] == [-0.6931, -0.6931, -13.8155, -0.6931]


def test_server_vad_items_in_order_and_deltas_concatenate_to_the_transcript() -> None:
    t = EventTranslator(ids(), logprobs=True)
    t.begin(offset_s=10.0, manual=False)
    out = translated(
        t,
        [
            protocol.speech_started(1, 1.0),
            protocol.interim(1, "Had he married a", "Had he", 1.0, 1.5, "en"),
            protocol.interim(1, "Had he married a more", "Had he married", 1.0, 1.8, "en"),
            final(1, "Had he married a more amiable woman."),
            protocol.speech_ended(1, 2.2),
            protocol.speech_started(2, 3.0),
            protocol.speech_ended(2, 3.4),  # nothing heard: committed with an empty transcript
        ],
    )
    assert types(out) == [
        "input_audio_buffer.speech_started",
        "delta",
        "delta",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "delta",
        "completed",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "completed",
    ]
    assert out[0]["audio_start_ms"] == 11000 and out[3]["audio_end_ms"] == 12000
    first = [e for e in out if e.get("item_id") == "item_1"]
    deltas = "".join(e["delta"] for e in first if e["type"].endswith(".delta"))
    completed = first[-1]
    assert deltas == completed["transcript"] == "Had he married a more amiable woman."
    assert completed["usage"] == {"type": "duration", "seconds": 1.0}
    assert [p["token"] for p in completed["logprobs"]][:2] == ["Had", " he"]
    assert out[9]["previous_item_id"] == "item_1" and out[10]["transcript"] == ""
    # a client commit that closed no speech: an empty item, with no speech_stopped
    t.commit_requested(False)
    empty = t.translate(protocol.flushed())
    assert types(empty) == ["input_audio_buffer.committed", "completed"]
    assert empty[0]["previous_item_id"] == "item_2" and empty[1]["transcript"] == ""


def test_client_commits_without_turn_detection() -> None:
    t = EventTranslator(ids())
    t.begin(offset_s=0.0, manual=True)
    t.commit_requested(True)
    t.commit_requested(False)  # a commit whose audio held no utterance
    out = translated(
        t,
        [
            protocol.speech_started(1, 0.0),
            final(1, "hello there"),
            protocol.speech_ended(1, 2.0),
            protocol.flushed(),
            protocol.flushed(),
        ],
    )
    assert types(out) == [
        "input_audio_buffer.committed",
        "delta",
        "completed",
        "input_audio_buffer.committed",
        "completed",
    ]
    assert out[-1]["transcript"] == "" and "logprobs" not in out[-1]


def test_cleared_and_failed_items() -> None:
    t = EventTranslator(ids())
    t.begin(offset_s=0.0, manual=False)
    out = t.translate(protocol.speech_started(1, 0.0))
    out += t.translate({"type": "input_audio_buffer.cleared"})
    out += t.translate(final(1, "late"))  # an utterance dropped by the clear says nothing
    assert types(out) == ["input_audio_buffer.speech_started", "input_audio_buffer.cleared"]
    t.translate(protocol.speech_started(2, 1.0))
    t.translate(protocol.error_message(protocol.INTERNAL, "transcription failed"))
    out = t.translate(protocol.speech_ended(2, 2.0))
    assert types(out)[-1] == "failed" and out[-1]["error"]["code"] == "internal"


# -- endpointing overrides on a real StreamSession ---------------------------------------
async def run_session(audio: np.ndarray, endpointing: EndpointingOverrides, *, commit_at=None):
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    session = StreamSession(
        "s1",
        protocol.StreamConfig(interim_results=False),
        scheduler=FakeScheduler(),
        settings=SidecarSettings(adaptive_endpointing=False),  # the fixed 450 ms as the baseline
        metrics=SidecarMetrics(),
        send=send,
        vad=LoudnessVAD(),
        endpointing=endpointing,
    )
    data = (audio * 32768).astype("<i2")
    for begin in range(0, data.size, FRAME):
        session.feed(data[begin : begin + FRAME].tobytes())
        if commit_at is not None and begin + FRAME >= commit_at * SAMPLE_RATE:
            session.flush()
            commit_at = None
        await asyncio.sleep(0)
    await session.finish(None)
    return [m for m in sent if m["type"] in ("speech_started", "final", "flushed")]


async def test_silence_duration_sets_the_endpoint() -> None:
    # speech, a 0.6 s pause, speech: one utterance at 800 ms, two at the default 450 ms
    audio = np.concatenate([pcm(1, SPEECH), pcm(0.6, 0), pcm(1, SPEECH), pcm(1, 0)])
    default = await run_session(audio, EndpointingOverrides())
    longer = await run_session(audio, EndpointingOverrides(silence_ms=800))
    assert [m["type"] for m in default].count("final") == 2
    assert [m["type"] for m in longer].count("final") == 1


async def test_threshold_and_prefix_padding() -> None:
    quiet = SPEECH * 0.4  # probability 0.4: speech only under a lower threshold
    audio = np.concatenate([pcm(1, 0), pcm(1, quiet), pcm(1, 0)])
    assert await run_session(audio, EndpointingOverrides()) == []
    heard = await run_session(audio, EndpointingOverrides(onset=0.3, pre_roll_s=0.1))
    assert [m["type"] for m in heard] == ["speech_started", "final"]
    assert heard[0]["start"] == pytest.approx(1.0, abs=0.05)


async def test_manual_endpointing_waits_for_the_commit() -> None:
    # long pauses never end the utterance; the commit does, silence included
    audio = np.concatenate([pcm(0.5, 0), pcm(1, SPEECH), pcm(2, 0), pcm(1, SPEECH), pcm(0.5, 0)])
    got = await run_session(audio, EndpointingOverrides(manual=True), commit_at=4.0)
    # (the second utterance is finalized by the end of input)
    assert [m["type"] for m in got] == [
        "speech_started",
        "final",
        "flushed",
        "speech_started",
        "final",
    ]
    assert got[0]["start"] == 0.0  # the utterance starts with the audio, speech or not


# -- keywords on /v1/stream and in the plugin --------------------------------------------
def test_stream_config_takes_bounded_keywords() -> None:
    config = protocol.parse_config(
        '{"type": "config", "keywords": ["Nguyen", " Kubernetes "]}', languages=EN
    )
    assert config.keywords == ("Nguyen", "Kubernetes")
    from stt_sidecar.streaming.transcripts import final_options, interim_options

    assert final_options(config)["hotwords"] == interim_options(config)["hotwords"]
    assert final_options(config)["hotwords"] == "Nguyen, Kubernetes"
    assert final_options(protocol.StreamConfig())["hotwords"] is None
    for bad in ['"Nguyen"', '[""]', "[1]", '["x"]'.replace("x", "y" * 51), str(["a"] * 51)]:
        with pytest.raises(protocol.ProtocolViolation) as caught:
            protocol.parse_config(
                '{"type": "config", "keywords": ' + bad.replace("'", '"') + "}", languages=EN
            )
        assert caught.value.code == protocol.INVALID_CONFIG


def test_plugin_sends_keywords_only_when_given() -> None:
    from livekit.plugins.custom_stt._protocol import config_message

    plain = config_message(language="en", task="transcribe", interim_results=True, prompt=None)
    assert "keywords" not in plain  # a sidecar from before keywords still takes the config
    hinted = config_message(
        language="en", task="transcribe", interim_results=True, prompt=None, keywords=("A",)
    )
    assert hinted["keywords"] == ["A"]


# -- hostile input: only RealtimeError, whatever the shape -------------------------------
def _random_value(rng: np.random.Generator, depth: int = 0) -> Any:
    kinds = ["none", "bool", "int", "float", "str", "list", "dict"]
    kind = kinds[int(rng.integers(len(kinds) if depth < 3 else 5))]
    keys = ["type", "audio", "input", "format", "transcription", "turn_detection", "rate",
            "model", "language", "languages", "prompt", "keywords", "threshold", "include",
            "prefix_padding_ms", "silence_duration_ms", "input_audio_format", "session",
            "input_audio_transcription", "x"]  # fmt: skip
    values = ["transcription", "audio/pcm", "audio/pcmu", "server_vad", "semantic_vad", "en",
              "whisper-1", "pcm16", "g711_ulaw", "realtime", "", "zz"]  # fmt: skip
    if kind == "none":
        return None
    if kind == "bool":
        return bool(rng.integers(2))
    if kind == "int":
        return int(rng.choice([-1, 0, 1, 300, 24000, 10**12]))
    if kind == "float":
        return float(rng.choice([0.5, -0.1, 1e308, 0.0]))
    if kind == "str":
        return str(rng.choice(values))
    if kind == "list":
        return [_random_value(rng, depth + 1) for _ in range(int(rng.integers(3)))]
    return {
        str(rng.choice(keys)): _random_value(rng, depth + 1) for _ in range(int(rng.integers(4)))
    }


CURRENT = {
    "type": "transcription",
    "include": ["item.input_audio_transcription.logprobs"],
    "audio": {
        "input": {
            "format": {"type": "audio/pcm", "rate": 24000},
            "transcription": {"model": "whisper-1", "language": "en", "prompt": "p",
                              "keywords": ["k"], "languages": ["en"]},
            "turn_detection": {"type": "server_vad", "threshold": 0.5,
                               "prefix_padding_ms": 300, "silence_duration_ms": 500},
        }
    },
}  # fmt: skip
BETA = {
    "input_audio_format": "pcm16",
    "input_audio_transcription": {"model": "whisper-1", "language": "en", "prompt": "p"},
    "turn_detection": {"type": "server_vad", "threshold": 0.5},
    "include": [],
}


def _mutate(value: Any, rng: np.random.Generator) -> Any:
    """A copy of `value` with some leaves (or whole branches) replaced by random values."""
    if rng.random() < 0.15:
        return _random_value(rng, 2)
    if isinstance(value, dict):
        return {k: _mutate(v, rng) for k, v in value.items() if rng.random() > 0.1}
    if isinstance(value, list):
        return [_mutate(v, rng) for v in value]
    return value


def test_random_session_updates_only_raise_realtime_errors() -> None:
    rng = np.random.default_rng(13)
    for i in range(3000):
        kind = "session.update" if i % 2 else "transcription_session.update"
        shape = BETA if kind.startswith("transcription_session") else CURRENT
        session = _mutate(shape, rng) if i % 3 else _random_value(rng)
        event = {"type": kind, "session": session}
        try:
            config = apply_update(RealtimeConfig(), event, languages=MULTI, served="base")
        except RealtimeError:
            continue
        render(config, session_id="s", served="base", endpoint_silence_ms=450, beta=i % 2 == 0)
        config.stream_config()
        config.endpointing(450)


async def test_clear_drops_the_utterance_in_progress() -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    session = StreamSession(
        "s1",
        protocol.StreamConfig(interim_results=False),
        scheduler=FakeScheduler(),
        settings=SidecarSettings(),
        metrics=SidecarMetrics(),
        send=send,
        vad=LoudnessVAD(),
    )

    def feed(audio: np.ndarray) -> None:
        data = (audio * 32768).astype("<i2")
        for begin in range(0, data.size, FRAME):
            session.feed(data[begin : begin + FRAME].tobytes())

    # mid-utterance, on a VAD window boundary (the VAD may still hold up to 31 ms of audio
    # from before a clear, which can start the next utterance at the clear point)
    feed(np.concatenate([pcm(0.512, 0), pcm(1.024, SPEECH)]))
    session.clear({"type": "input_audio_buffer.cleared"})
    feed(np.concatenate([pcm(0.5, 0), pcm(1, SPEECH), pcm(1, 0)]))
    await session.finish(None)
    assert [m["type"] for m in sent] == [
        "speech_started",
        "input_audio_buffer.cleared",
        "speech_started",
        "final",
        "speech_ended",
    ]
    assert sent[2]["utterance_id"] == 2 and sent[3]["utterance_id"] == 2
