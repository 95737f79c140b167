"""Parsing what clients and operators send: the stream `config` message (with the one language
and task rule) and the environment (`SidecarSettings.from_env`)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from stt_sidecar import languages as languages_module
from stt_sidecar.config import ConfigError, SidecarSettings, parse_bool
from stt_sidecar.languages import Languages
from stt_sidecar.streaming.protocol import INVALID_CONFIG, ProtocolViolation, parse_config

ENGLISH_ONLY = Languages(english_only=True)
MULTILINGUAL = Languages(english_only=False)


@pytest.fixture(autouse=True)
def _codes(monkeypatch: pytest.MonkeyPatch) -> None:
    # Whisper's code list lives in faster_whisper, which unit tests do not import.
    monkeypatch.setattr(
        languages_module, "whisper_language_codes", lambda: frozenset({"en", "de", "fr"})
    )


def config(languages: Languages = MULTILINGUAL, **fields: Any) -> Any:
    return parse_config(json.dumps({"type": "config", **fields}), languages=languages)


def violation(languages: Languages = MULTILINGUAL, **fields: Any) -> str:
    with pytest.raises(ProtocolViolation) as caught:
        config(languages, **fields)
    assert caught.value.code == INVALID_CONFIG
    return caught.value.message


def test_defaults() -> None:
    parsed = config()
    assert (parsed.language, parsed.sample_rate, parsed.channels, parsed.task) == (
        None,  # a multilingual model detects; an English-only one hears English
        16000,
        1,
        "transcribe",
    )
    assert parsed.interim_results is True and parsed.prompt is None
    assert parsed.max_frame_bytes == 32000 and parsed.frame_alignment == 2


def test_language_rule() -> None:
    assert config(language=None).language is None  # detect
    assert config(ENGLISH_ONLY, language=None).language == "en"
    assert config(language="de").language == "de"
    assert "Whisper language code" in violation(language="xx")
    assert "Whisper language code" in violation(language=5)
    assert "English-only" in violation(ENGLISH_ONLY, language="de")
    assert "Whisper language code" in violation(ENGLISH_ONLY, language="xx")
    assert config(ENGLISH_ONLY).language == "en"
    assert config(language="auto").language is None
    assert config(ENGLISH_ONLY, language="auto").language == "en"


def test_a_list_of_languages_restricts_detection() -> None:
    parsed = config(language=["de", "fr", "de"])
    assert (parsed.language, parsed.allowed_languages) == (None, ("de", "fr"))
    assert config(language=["fr"]).language == "fr"  # one language: nothing to detect
    assert config().allowed_languages == ()
    assert config(ENGLISH_ONLY, language=["en", "en"]).language == "en"
    assert "English-only" in violation(ENGLISH_ONLY, language=["en", "de"])
    for bad in ([], ["de", "xx"], ["de", 5], ["de", "auto"], ["de"] * 101, {"de": 1}):
        assert "list of codes" in violation(language=bad), bad


def test_task_rule() -> None:
    assert config(task="translate").task == "translate"
    assert "'transcribe' or 'translate'" in violation(task="summarize")
    assert "cannot translate" in violation(ENGLISH_ONLY, task="translate")


@pytest.mark.parametrize(
    ("fields", "key"),
    [
        ({"sample_rate": 7999}, "sample_rate"),
        ({"sample_rate": True}, "sample_rate"),
        ({"encoding": "opus"}, "encoding"),
        ({"channels": 3}, "channels"),
        ({"interim_results": "yes"}, "interim_results"),
        ({"prompt": "x" * 1001}, "prompt"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_fields_are_named(fields: dict[str, Any], key: str) -> None:
    assert key in violation(**fields)


def test_environment() -> None:
    s = SidecarSettings.from_env(
        {
            "STT_PORT": " 9000 ",
            "STT_DEVICE": "CPU",
            "STT_MAX_UTTERANCE_S": "12.5",
            "STT_API_KEY": "",
            "STT_CONTINUATION_GAP_MS": "0",
        }
    )
    assert (s.port, s.device, s.max_utterance_s, s.api_key) == (9000, "cpu", 12.5, None)
    assert s.continuation_gap_ms == 0
    assert SidecarSettings.from_env({}) == SidecarSettings()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"STT_PORT": "http"}, "not a valid int"),
        ({"STT_PORT": "70000"}, "must be <= 65535"),
        ({"STT_MAX_UTTERANCE_S": "1"}, "must be >= 2"),
        ({"STT_DEVICE": "tpu"}, "must be one of auto, cpu, cuda"),
        ({"STT_CONTINUATION_GAP_MS": "-1"}, "must be >= 0"),
    ],
)
def test_bad_environment_names_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        SidecarSettings.from_env(env)
    assert next(iter(env)) in str(caught.value)


def test_yes_no_words() -> None:
    assert [parse_bool(w) for w in ("1", "TRUE", " yes", "on")] == [True] * 4
    assert [parse_bool(w) for w in ("0", "false", "No ", "off")] == [False] * 4
    with pytest.raises(ValueError):
        parse_bool("maybe")
