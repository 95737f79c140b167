"""Real speech for tests (copied from shared/speech, see tests/data/README.md) and WER scoring."""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import jiwer
import numpy as np

from stt_sidecar.replay import load_pcm16

DATA = Path(__file__).resolve().parents[1] / "data"
MULTILINGUAL = DATA / "multilingual"

_UNITS = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen \
fifteen sixteen seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_ABBREVIATIONS = {"mr": "mister", "mrs": "missus", "dr": "doctor", "st": "saint"}


def _number_words(n: int) -> str:
    if n < 20:
        return _UNITS[n]
    if n < 100:
        tens, units = divmod(n, 10)
        return _TENS[tens] + ("" if units == 0 else " " + _UNITS[units])
    return str(n)


def normalize(text: str) -> str:
    """Lowercase, spell small numbers, expand common abbreviations, drop punctuation."""
    text = text.lower().replace("-", " ")
    text = re.sub(r"\d+", lambda m: _number_words(int(m.group())), text)
    text = re.sub(r"[^\w\s']", " ", text)
    words = [_ABBREVIATIONS.get(w, w) for w in text.split()]
    return " ".join(words)


# Digits as the recordings say them (the references write some numbers as digits).
_DIGIT_WORDS = {
    "es": "cero uno dos tres cuatro cinco seis siete ocho nueve diez".split(),
    "fr": "zero un deux trois quatre cinq six sept huit neuf dix".split(),
    "it": "zero uno due tre quattro cinque sei sette otto nove dieci".split(),
}


def normalize_any(text: str, language: str) -> str:
    """`normalize` for English; for other languages lowercase, no diacritics (the Spanish
    references write most words without accents), digits up to ten as words, apostrophes and
    hyphens split words, no punctuation."""
    if language == "en":
        return normalize(text)
    text = unicodedata.normalize("NFKD", text.lower())
    text = "".join(c for c in text if not unicodedata.combining(c))
    words = _DIGIT_WORDS.get(language, [])
    text = re.sub(
        r"\d+", lambda m: words[int(m.group())] if int(m.group()) < len(words) else m.group(), text
    )
    return " ".join(re.sub(r"[^\w\s]", " ", text).split())


def wer(reference: str | list[str], hypothesis: str | list[str], *, language: str = "en") -> float:
    """Word error rate after normalizing both sides (lists are scored as one corpus)."""
    refs = [reference] if isinstance(reference, str) else reference
    hyps = [hypothesis] if isinstance(hypothesis, str) else hypothesis
    refs = [normalize_any(r, language) or "<empty>" for r in refs]
    hyps = [normalize_any(h, language) for h in hyps]
    return jiwer.wer(refs, hyps)


@dataclass(frozen=True)
class Clip:
    name: str
    path: Path
    text: str


@cache
def clips() -> tuple[Clip, ...]:
    """Every single-sentence clip with its reference transcript."""
    rows = [json.loads(line) for line in (DATA / "transcripts.jsonl").read_text().splitlines()]
    return tuple(Clip(r["audio"], DATA / r["audio"], r["text"]) for r in rows)


def clip(name: str) -> Clip:
    return next(c for c in clips() if c.name == name)


@dataclass(frozen=True)
class LanguageClip(Clip):
    language: str


@cache
def multilingual_clips() -> tuple[LanguageClip, ...]:
    """Recorded speech in other languages (tests/data/multilingual/README.md): 8 kHz WAV."""
    lines = (MULTILINGUAL / "transcripts.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    return tuple(
        LanguageClip(r["audio"], MULTILINGUAL / r["audio"], r["text"], r["language"]) for r in rows
    )


def multilingual_clip(name: str) -> LanguageClip:
    return next(c for c in multilingual_clips() if c.name == name)


@cache
def conversation() -> dict:
    """conversation.wav's timing and references (see tests/data/README.md)."""
    return json.loads((DATA / "conversation.json").read_text())


def read_pcm16(path: Path) -> tuple[np.ndarray, int]:
    """Samples as int16 (mono as recorded: 1-D; otherwise frames x channels) and the rate.
    The same reader as `stt_sidecar.replay.load_pcm16`, which always gives frames x channels."""
    audio, rate = load_pcm16(path)
    return (audio[:, 0] if audio.shape[1] == 1 else audio), rate
