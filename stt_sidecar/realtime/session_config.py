"""A transcription session's settings, from `session.update` (current shape) or
`transcription_session.update` (beta shape), and rendered back in either shape.

Fields a client leaves out keep their value, as with OpenAI. Every field OpenAI defines for a
transcription session is accepted; the ones with no meaning here (noise reduction, response
creation, `delay`) are ignored, and anything else is an `unknown_parameter` error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from ..languages import LanguageRejected, Languages
from ..model_names import OPENAI_TRANSCRIPTION_MODELS, accepts_model
from ..streaming import session as stream_session
from ..streaming.protocol import MAX_PROMPT_CHARS, StreamConfig, parse_keywords
from .audio_formats import BY_BETA_NAME, BY_TYPE, PCM16, InputFormat
from .events import INVALID_VALUE, MODEL_NOT_FOUND, UNKNOWN_PARAMETER, RealtimeError

LOGPROBS = "item.input_audio_transcription.logprobs"
MIN_SILENCE_MS, MAX_SILENCE_MS = 100, 10_000
MAX_PREFIX_PADDING_MS = 2_000


@dataclass(frozen=True)
class TurnDetection:
    type: str | None = "server_vad"  # or "semantic_vad"; None: the client commits
    threshold: float | None = None  # None: the server's own (its values are reported)
    prefix_padding_ms: int | None = None
    silence_duration_ms: int | None = None


@dataclass(frozen=True)
class RealtimeConfig:
    format: InputFormat = PCM16
    model: str | None = None  # as the client named it; None: the served model
    language: str | None = "en"  # resolved: None is "detect" on a multilingual model
    prompt: str | None = None
    keywords: tuple[str, ...] = ()
    turn_detection: TurnDetection = TurnDetection()
    logprobs: bool = False

    def stream_config(self) -> StreamConfig:
        return StreamConfig(
            language=self.language,
            sample_rate=self.format.sample_rate,
            channels=1,
            interim_results=True,
            prompt=self.prompt,
            keywords=self.keywords,
        )

    def endpointing(self, reported_silence_ms: int) -> stream_session.EndpointingOverrides:
        """The stream session's endpointing. `reported_silence_ms` is the silence the session
        events report when the client set none: a client that sends it back (some echo the
        whole session) keeps adaptive endpointing; any other value fixes the silence."""
        td = self.turn_detection
        if td.type is None:
            return stream_session.EndpointingOverrides(manual=True)
        if td.type == "semantic_vad":  # served by our default endpointing
            return stream_session.EndpointingOverrides()
        return stream_session.EndpointingOverrides(
            onset=td.threshold,
            pre_roll_s=None if td.prefix_padding_ms is None else td.prefix_padding_ms / 1000,
            silence_ms=None
            if td.silence_duration_ms == reported_silence_ms
            else td.silence_duration_ms,
        )

    def engine_settings(self) -> tuple[Any, ...]:
        """What a running stream session was built with: a change needs a new one."""
        return (self.format, self.language, self.prompt, self.keywords, self.turn_detection)


# -- parsing ------------------------------------------------------------------------------
def _object(value: Any, param: str, allowed: Collection[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RealtimeError(INVALID_VALUE, f"'{param}' must be an object.", param=param)
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise RealtimeError(
            UNKNOWN_PARAMETER,
            f"Unknown parameter '{param}.{unknown[0][:60]}'.",
            param=f"{param}.{unknown[0][:60]}",
        )
    return value


def _number(value: Any, param: str, low: float, high: float, *, integer: bool) -> Any:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        kind = "an integer" if integer else "a number"
        raise RealtimeError(
            INVALID_VALUE, f"'{param}' must be {kind} from {low:g} to {high:g}.", param=param
        )
    return value


def _transcription(
    config: RealtimeConfig, value: Any, param: str, languages: Languages, served: str
) -> RealtimeConfig:
    if value is None:  # "transcription off" means nothing to a transcription-only server
        return config
    t = _object(value, param, {"model", "language", "languages", "prompt", "keywords", "delay"})
    changes: dict[str, Any] = {}
    if "model" in t and t["model"] is not None:
        model = t["model"]
        if not isinstance(model, str) or not accepts_model(model, served):
            shown = model[:100] if isinstance(model, str) else model
            raise RealtimeError(
                MODEL_NOT_FOUND,
                f"Unknown model {shown!r}: this server serves '{served}' (also reachable as "
                f"{', '.join(sorted(OPENAI_TRANSCRIPTION_MODELS))}).",
                param=f"{param}.model",
            )
        changes["model"] = model
    if "language" in t or "languages" in t:
        changes["language"] = _language(t, param, languages)
    if "prompt" in t:
        prompt = t["prompt"]
        if prompt is not None and (not isinstance(prompt, str) or len(prompt) > MAX_PROMPT_CHARS):
            raise RealtimeError(
                INVALID_VALUE,
                f"'{param}.prompt' must be a string of at most {MAX_PROMPT_CHARS} characters.",
                param=f"{param}.prompt",
            )
        changes["prompt"] = prompt or None
    if "keywords" in t:
        try:
            changes["keywords"] = parse_keywords(t["keywords"])
        except ValueError as exc:
            raise RealtimeError(
                INVALID_VALUE, f"'{param}.keywords' {exc}.", param=f"{param}.keywords"
            ) from None
    return dataclasses.replace(config, **changes)


def _language(t: dict[str, Any], param: str, languages: Languages) -> str | None:
    code = t.get("language")
    if code is None and isinstance(t.get("languages"), list) and len(t["languages"]) == 1:
        code = t["languages"][0]  # several languages: detect among all
    if code is not None and not isinstance(code, str):
        code = "?"
    try:
        return languages.resolve(code or None)
    except LanguageRejected as exc:
        why = "this model is English-only" if exc.reason == "english_only" else "unknown code"
        raise RealtimeError(
            INVALID_VALUE, f"'{param}.language': {why}.", param=f"{param}.language"
        ) from None


_TURN_KEYS = {
    "type",
    "threshold",
    "prefix_padding_ms",
    "silence_duration_ms",
    "create_response",
    "interrupt_response",
    "idle_timeout_ms",
    "eagerness",
}


def _turn_detection(value: Any, param: str) -> TurnDetection:
    if value is None:
        return TurnDetection(type=None)
    td = _object(value, param, _TURN_KEYS)
    kind = td.get("type") or "server_vad"
    if kind == "semantic_vad":
        return TurnDetection(type="semantic_vad")
    if kind != "server_vad":
        raise RealtimeError(
            INVALID_VALUE,
            f"'{param}.type' must be 'server_vad' or 'semantic_vad' (or null turn detection).",
            param=f"{param}.type",
        )
    threshold = td.get("threshold")
    padding = td.get("prefix_padding_ms")
    silence = td.get("silence_duration_ms")
    return TurnDetection(
        type="server_vad",
        threshold=None
        if threshold is None
        else _number(threshold, f"{param}.threshold", 0.01, 0.99, integer=False),
        prefix_padding_ms=None
        if padding is None
        else _number(padding, f"{param}.prefix_padding_ms", 0, MAX_PREFIX_PADDING_MS, integer=True),
        silence_duration_ms=None
        if silence is None
        else _number(
            silence, f"{param}.silence_duration_ms", MIN_SILENCE_MS, MAX_SILENCE_MS, integer=True
        ),
    )


def _include(value: Any, param: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, list) or any(v != LOGPROBS for v in value):
        raise RealtimeError(INVALID_VALUE, f"'{param}' may only list '{LOGPROBS}'.", param=param)
    return bool(value)


def apply_update(
    config: RealtimeConfig, event: dict[str, Any], *, languages: Languages, served: str
) -> RealtimeConfig:
    """The session after `event` (`session.update` or `transcription_session.update`).

    Raises:
        RealtimeError: naming the offending parameter; the session is then left unchanged.
    """
    if event["type"] == "transcription_session.update":
        return _apply_beta(config, event.get("session"), languages, served)
    session = _object(
        event.get("session"), "session", {"type", "audio", "include", "id", "object", "expires_at"}
    )
    if session.get("type", "transcription") != "transcription":
        raise RealtimeError(
            INVALID_VALUE,
            "This server serves transcription sessions only: 'session.type' must be "
            "'transcription'.",
            param="session.type",
        )
    if "include" in session:
        config = dataclasses.replace(config, logprobs=_include(session["include"], "include"))
    if session.get("audio") is None:
        return config
    audio = _object(session["audio"], "session.audio", {"input"})
    if audio.get("input") is None:
        return config
    p = "session.audio.input"
    audio_input = _object(
        audio["input"], p, {"format", "transcription", "turn_detection", "noise_reduction"}
    )
    if audio_input.get("format") is not None:
        config = dataclasses.replace(config, format=_format(audio_input["format"], f"{p}.format"))
    if "transcription" in audio_input:
        config = _transcription(
            config, audio_input["transcription"], f"{p}.transcription", languages, served
        )
    if "turn_detection" in audio_input:
        td = _turn_detection(audio_input["turn_detection"], f"{p}.turn_detection")
        config = dataclasses.replace(config, turn_detection=td)
    return config


def _format(value: Any, param: str) -> InputFormat:
    f = _object(value, param, {"type", "rate"})
    kind = f.get("type") or "audio/pcm"
    fmt = BY_TYPE.get(kind) if isinstance(kind, str) else None
    if fmt is None:
        raise RealtimeError(
            INVALID_VALUE,
            f"'{param}.type' must be one of {', '.join(BY_TYPE)}.",
            param=f"{param}.type",
        )
    rate = f.get("rate")
    if rate is not None and rate != fmt.sample_rate:
        raise RealtimeError(
            INVALID_VALUE,
            f"'{param}.rate' must be {fmt.sample_rate} for {fmt.type}.",
            param=f"{param}.rate",
        )
    return fmt


def _apply_beta(
    config: RealtimeConfig, value: Any, languages: Languages, served: str
) -> RealtimeConfig:
    session = _object(
        value,
        "session",
        {
            "input_audio_format",
            "input_audio_transcription",
            "turn_detection",
            "input_audio_noise_reduction",
            "include",
            "modalities",
            "client_secret",
        },
    )
    if "include" in session:
        logprobs = _include(session["include"], "session.include")
        config = dataclasses.replace(config, logprobs=logprobs)
    name = session.get("input_audio_format")
    if name is not None:
        fmt = BY_BETA_NAME.get(name) if isinstance(name, str) else None
        if fmt is None:
            raise RealtimeError(
                INVALID_VALUE,
                f"'session.input_audio_format' must be one of {', '.join(BY_BETA_NAME)}.",
                param="session.input_audio_format",
            )
        config = dataclasses.replace(config, format=fmt)
    if "input_audio_transcription" in session:
        config = _transcription(
            config,
            session["input_audio_transcription"],
            "session.input_audio_transcription",
            languages,
            served,
        )
    if "turn_detection" in session:
        td = _turn_detection(session["turn_detection"], "session.turn_detection")
        config = dataclasses.replace(config, turn_detection=td)
    return config


# -- rendering ----------------------------------------------------------------------------
def _turn_detection_out(td: TurnDetection, endpoint_silence_ms: int) -> dict[str, Any] | None:
    if td.type is None:
        return None
    if td.type == "semantic_vad":
        return {"type": "semantic_vad", "eagerness": "auto"}
    return {
        "type": "server_vad",
        "threshold": td.threshold if td.threshold is not None else stream_session.SPEECH_ONSET,
        "prefix_padding_ms": td.prefix_padding_ms
        if td.prefix_padding_ms is not None
        else int(stream_session.PRE_ROLL_S * 1000),
        "silence_duration_ms": td.silence_duration_ms
        if td.silence_duration_ms is not None
        else endpoint_silence_ms,
    }


def _transcription_out(config: RealtimeConfig, served: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "model": config.model or served,
        "language": config.language,
        "prompt": config.prompt or "",
    }
    if config.keywords:
        out["keywords"] = list(config.keywords)
    return out


def render(
    config: RealtimeConfig, *, session_id: str, served: str, endpoint_silence_ms: int, beta: bool
) -> dict[str, Any]:
    """The session object of `session.created` / `session.updated` (current shape) or
    `transcription_session.updated` (beta shape)."""
    td = _turn_detection_out(config.turn_detection, endpoint_silence_ms)
    include = [LOGPROBS] if config.logprobs else None
    if beta:
        return {
            "id": session_id,
            "object": "realtime.transcription_session",
            "input_audio_format": config.format.beta_name,
            "input_audio_transcription": _transcription_out(config, served),
            "turn_detection": td,
            "input_audio_noise_reduction": None,
            "modalities": ["text"],
            "include": include,
        }
    return {
        "type": "transcription",
        "object": "realtime.transcription_session",
        "id": session_id,
        "audio": {
            "input": {
                "format": config.format.session_format(),
                "transcription": _transcription_out(config, served),
                "turn_detection": td,
                "noise_reduction": None,
            }
        },
        "include": include,
    }
