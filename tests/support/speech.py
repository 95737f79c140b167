"""Real speech for tests (copied from shared/speech, see tests/data/README.md) and WER scoring."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import jiwer
import numpy as np

from stt_sidecar.replay import load_pcm16

DATA = Path(__file__).resolve().parents[1] / "data"

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


def wer(reference: str | list[str], hypothesis: str | list[str]) -> float:
    """Word error rate after `normalize` on both sides (lists are scored as one corpus)."""
    refs = [reference] if isinstance(reference, str) else reference
    hyps = [hypothesis] if isinstance(hypothesis, str) else hypothesis
    refs = [normalize(r) or "<empty>" for r in refs]
    hyps = [normalize(h) for h in hyps]
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


@cache
def conversation() -> dict:
    """conversation.wav's timing and references (see tests/data/README.md)."""
    return json.loads((DATA / "conversation.json").read_text())


def read_pcm16(path: Path) -> tuple[np.ndarray, int]:
    """Samples as int16 (mono as recorded: 1-D; otherwise frames x channels) and the rate.
    The same reader as `stt_sidecar.replay.load_pcm16`, which always gives frames x channels."""
    audio, rate = load_pcm16(path)
    return (audio[:, 0] if audio.shape[1] == 1 else audio), rate
