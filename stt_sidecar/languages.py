"""The language and task rule, one for batch and streaming.

English-only models (`*.en`) transcribe English and nothing else: an omitted language means
English, and they cannot translate. Multilingual models take any Whisper language code, detect
the language when none is given, and translate to English. Each surface words its own errors
(HTTP 400 bodies, the `invalid_config` message), so these raise with a reason, not a message.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Literal

TASKS = ("transcribe", "translate")


@cache
def whisper_language_codes() -> frozenset[str]:
    """Every language code Whisper knows (what a multilingual model's
    `supported_languages` lists). Imported on first use: the rule itself loads no model code."""
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    return frozenset(_LANGUAGE_CODES)


class LanguageRejected(ValueError):
    """`reason`: `unknown` (not a Whisper code) or `english_only` (a code the model lacks)."""

    def __init__(self, reason: Literal["unknown", "english_only"]) -> None:
        super().__init__(reason)
        self.reason = reason


class TaskRejected(ValueError):
    """`reason`: `unknown` (not transcribe/translate) or `english_only` (cannot translate)."""

    def __init__(self, reason: Literal["unknown", "english_only"]) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Languages:
    """What the served model can do with languages."""

    english_only: bool

    def resolve(self, code: str | None) -> str | None:
        """The language to decode in: `code`, or for None English (English-only models) or
        None (detect).

        Raises:
            LanguageRejected: see its `reason`.
        """
        if code is None:
            return "en" if self.english_only else None
        if code not in whisper_language_codes():
            raise LanguageRejected("unknown")
        if self.english_only and code != "en":
            raise LanguageRejected("english_only")
        return code

    def check_task(self, task: object) -> str:
        """`task` if this model can do it.

        Raises:
            TaskRejected: see its `reason`.
        """
        if task not in TASKS:
            raise TaskRejected("unknown")
        if task == "translate" and self.english_only:
            raise TaskRejected("english_only")
        assert isinstance(task, str)
        return task
