"""The language and task rule, one for batch and streaming.

English-only models (`*.en`) transcribe English and nothing else: an omitted language (or
`auto`) means English, and they cannot translate. Multilingual models take any Whisper language
code, detect the language when none is given (or `auto`), may be told to detect among a few
languages only, and translate to English. Each surface words its own errors (HTTP 400 bodies,
the `invalid_config` message), so these raise with a reason, not a message.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Literal

TASKS = ("transcribe", "translate")
DETECT = "auto"  # the explicit spelling of "detect the language"
MAX_ALLOWED_LANGUAGES = 100  # Whisper knows 100 languages: a longer list only repeats codes


@cache
def whisper_language_codes() -> frozenset[str]:
    """Every language code Whisper knows (what a multilingual model's
    `supported_languages` lists). Imported on first use: the rule itself loads no model code."""
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    return frozenset(_LANGUAGE_CODES)


class LanguageRejected(ValueError):
    """`reason`: `unknown` (not a Whisper code, or not a usable list of them) or `english_only`
    (a code the model lacks)."""

    def __init__(self, reason: Literal["unknown", "english_only"]) -> None:
        super().__init__(reason)
        self.reason = reason


class TaskRejected(ValueError):
    """`reason`: `unknown` (not transcribe/translate) or `english_only` (cannot translate)."""

    def __init__(self, reason: Literal["unknown", "english_only"]) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class LanguageChoice:
    """What a stream decodes in: one language, or detection (among `allowed` when not empty)."""

    language: str | None
    allowed: tuple[str, ...] = ()


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
        if code is None or code == DETECT:
            return "en" if self.english_only else None
        if code not in whisper_language_codes():
            raise LanguageRejected("unknown")
        if self.english_only and code != "en":
            raise LanguageRejected("english_only")
        return code

    def choose(self, value: object) -> LanguageChoice:
        """A stream's `language`: a code, None or `auto` (detect), or a list of codes to detect
        among (a one-code list is that code).

        Raises:
            LanguageRejected: see its `reason`; `unknown` also for a list that is empty, too
                long or holds something other than codes.
        """
        if value is None or isinstance(value, str):
            return LanguageChoice(self.resolve(value))
        if not isinstance(value, list) or not 0 < len(value) <= MAX_ALLOWED_LANGUAGES:
            raise LanguageRejected("unknown")
        codes: list[str] = []
        for code in value:
            if not isinstance(code, str) or code == DETECT:
                raise LanguageRejected("unknown")
            resolved = self.resolve(code)
            assert resolved is not None
            if resolved not in codes:
                codes.append(resolved)
        if len(codes) == 1:
            return LanguageChoice(codes[0])
        return LanguageChoice(None, tuple(codes))

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
