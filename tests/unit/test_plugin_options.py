"""Option and config building: env defaults, URLs, auth headers, the stream config, languages."""

from __future__ import annotations

import pytest
from livekit.agents import APIConnectOptions
from livekit.plugins import custom_stt
from livekit.plugins.custom_stt._protocol import (
    language_param,
    requested_language,
    single_language,
)


def test_defaults_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUSTOM_STT_URL", "http://sidecar.internal:9000/")
    monkeypatch.setenv("STT_API_KEY", "k")
    engine = custom_stt.STT()
    assert engine._opts.base_url == "http://sidecar.internal:9000"
    assert engine._opts.api_key == "k"
    assert engine._opts.ws_url() == "ws://sidecar.internal:9000/v1/stream"
    assert engine.provider == "sidecar.internal:9000"
    assert engine.model == "whisper-1"
    caps = engine.capabilities
    assert caps.streaming and caps.interim_results and caps.aligned_transcript == "word"
    monkeypatch.delenv("CUSTOM_STT_URL")
    monkeypatch.delenv("STT_API_KEY")
    assert custom_stt.STT()._opts.base_url == "http://127.0.0.1:8765"
    assert custom_stt.STT()._opts.api_key is None


def test_update_options_and_conn_options() -> None:
    from livekit.agents import DEFAULT_API_CONNECT_OPTIONS

    engine = custom_stt.STT(base_url="http://127.0.0.1:1", language="en")
    engine.update_options(language=None, prompt="LiveKit", interim_results=False)
    assert engine._opts.language is None and engine._opts.prompt == "LiveKit"
    assert engine._opts.task == "transcribe"  # untouched
    assert not engine.capabilities.interim_results
    # the framework default is replaced by the plugin's longer window; explicit options win
    assert (
        engine._resolve_conn_options(DEFAULT_API_CONNECT_OPTIONS) is custom_stt.DEFAULT_CONN_OPTIONS
    )
    explicit = APIConnectOptions()
    assert engine._resolve_conn_options(explicit) is explicit
    window = sum(
        custom_stt.DEFAULT_CONN_OPTIONS._interval_for_retry(i)
        for i in range(custom_stt.DEFAULT_CONN_OPTIONS.max_retry)
    )
    assert window >= 8.0


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # a developer's shell must not change what these tests see
    monkeypatch.delenv("CUSTOM_STT_URL", raising=False)
    monkeypatch.delenv("STT_API_KEY", raising=False)


def options(**kwargs: object) -> custom_stt.STTOptions:
    base: dict[str, object] = {
        "base_url": "http://127.0.0.1:8765",
        "api_key": None,
        "language": "en",
        "interim_results": True,
        "task": "transcribe",
        "prompt": None,
        "model": "whisper-1",
    }
    base.update(kwargs)
    return custom_stt.STTOptions(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("base_url", "ws_url"),
    [
        ("http://127.0.0.1:8765", "ws://127.0.0.1:8765/v1/stream"),
        ("https://stt.example.com", "wss://stt.example.com/v1/stream"),
        ("http://host:1/prefix/", "ws://host:1/prefix/v1/stream"),
        ("ws://host:2", "ws://host:2/v1/stream"),
    ],
)
def test_ws_url(base_url: str, ws_url: str) -> None:
    assert options(base_url=base_url).ws_url() == ws_url


def test_auth_headers_only_with_a_key() -> None:
    assert options(api_key="k").auth_headers() == {"Authorization": "Bearer k"}
    assert options(api_key=None).auth_headers() == {}
    assert options(api_key="").auth_headers() == {}


def test_stream_config_has_exactly_the_protocol_keys() -> None:
    cfg = options(
        language="en-US", task="translate", interim_results=False, prompt="Kim"
    ).stream_config()
    assert cfg == {
        "type": "config",
        "language": "en",
        "sample_rate": 16000,
        "encoding": "pcm_s16le",
        "channels": 1,
        "task": "translate",
        "interim_results": False,
        "prompt": "Kim",
    }
    assert options(language=None).stream_config()["language"] is None


@pytest.mark.parametrize(
    ("language", "param"),
    [("en", "en"), ("en-US", "en"), ("english", "en"), ("DE", "de"), ("", None), (None, None)],
)
def test_language_param_is_the_base_code(language: str | None, param: str | None) -> None:
    assert language_param(language) == param


@pytest.mark.parametrize(
    ("language", "param", "batch", "reported"),
    [
        ("auto", None, None, None),  # detection, spelled as the sidecar does
        ("multi", None, None, None),  # ... and as other LiveKit STT plugins do
        (["en-US", "german", "en"], ["en", "de"], None, None),  # detect among these
        (("fr-CA",), "fr", "fr", "fr"),  # one language in a list is that language
        (["auto"], None, None, None),
        ("de-AT", "de", "de", "de-AT"),
    ],
)
def test_language_option_takes_a_code_a_list_or_detection(
    language: object, param: object, batch: str | None, reported: str | None
) -> None:
    assert language_param(language) == param  # type: ignore[arg-type]
    assert single_language(language) == batch  # type: ignore[arg-type]
    assert requested_language(language) == reported  # type: ignore[arg-type]
    engine = custom_stt.STT(base_url="http://127.0.0.1:1", language=language)  # type: ignore[arg-type]
    assert engine._opts.stream_config()["language"] == param


def test_constructor_arguments_win_over_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUSTOM_STT_URL", "http://from-env:1")
    monkeypatch.setenv("STT_API_KEY", "env-key")
    engine = custom_stt.STT(base_url="http://given:2/", api_key=None, model="tiny.en")
    assert engine._opts.base_url == "http://given:2"
    assert engine._opts.api_key is None  # None given explicitly: no key, whatever the env says
    assert (engine.model, engine.provider) == ("tiny.en", "given:2")
    assert custom_stt.STT(api_key="")._opts.api_key is None


def test_max_replay_must_be_positive() -> None:
    with pytest.raises(ValueError):
        custom_stt.STT(max_replay_s=0)
