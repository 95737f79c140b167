"""Typed option values for the custom STT plugin.

Each alias is accepted as ``Alias | str`` by the public API, so a sidecar that learns a new
language or task does not need a plugin release.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, TypeAlias

STTLanguages = Literal[
    "en", "de", "es", "fr", "it", "ja", "ko", "nl", "pl", "pt", "ru", "sv", "tr", "uk", "zh"
]
"""Languages Whisper handles well. English-only models (``*.en``) accept only ``"en"``."""

STTLanguageOption: TypeAlias = STTLanguages | str | Sequence[STTLanguages | str] | None
"""The ``language`` option: a code (``"de"``, ``"de-DE"``, ``"german"``); ``None``, ``"auto"``
or ``"multi"`` to detect the language of each utterance; or a list of codes to detect among.
Detection needs a multilingual model (``STT_MODEL=base``)."""

STTTasks = Literal["transcribe", "translate"]
"""``translate`` asks a multilingual model for English text; ``*.en`` models only transcribe."""

STTModels = Literal["whisper-1", "tiny.en", "base.en", "small.en", "tiny", "base", "small"]
"""Model names for the OpenAI-compatible ``model`` form field; the sidecar serves the model it
was started with, so this is a label for metrics rather than a switch."""
