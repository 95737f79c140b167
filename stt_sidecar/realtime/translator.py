"""A stream session's messages (`/v1/stream` shapes) as OpenAI Realtime transcription events.

    speech_started ─ interim* ─ final ─ speech_ended        (one utterance = one item)
    input_audio_buffer.speech_started ─ ...delta* ─ .speech_stopped ─ .committed ─ ...delta
                                                                      ─ ...completed

Deltas are append-only: for every item, the concatenated deltas are a prefix of its `completed`
transcript, always. Interims contribute only their newly stable words (LocalAgreement-2, never
retracted), the final the rest. Where the final keeps the stable words but spells them
differently (case, punctuation), `completed` keeps the spelling already sent. Where it really
disagrees (another word), the sent words are aligned with the final's, and `completed` is the
deltas followed by the final's words after the point where the deltas end: the words after the
deltas keep the whole-utterance decode's accuracy, but a wrong stable word stays. Stable words
need two agreeing confident interims, which makes that rare (none on conversation.wav;
docs/realtime-protocol.md).

Differences from OpenAI, by design: deltas start during speech (OpenAI's start after the
commit), so they precede `speech_stopped` and `committed`; with client commits (no turn
detection) `committed` comes with the transcript rather than at once.
"""

from __future__ import annotations

import collections
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from typing import Any

from ..streaming.transcripts import comparable_word
from .events import INTERNAL, ms, server_event

TRANSCRIPTION = "conversation.item.input_audio_transcription"
CLEARED = "input_audio_buffer.cleared"
MIN_PROBABILITY = 1e-6  # of a word the decoder did not hear (log: -13.8)

logger = logging.getLogger("stt_sidecar.realtime")


@dataclass
class AppendOnlyText:
    """The deltas of one item: what was sent, and what may still be."""

    sent: str = ""
    diverged: bool = False  # the final disagreed with words already sent
    # per word of the completed transcript, the index of the final's word it stands for
    # (None: a sent word the final does not have)
    origin: list[int | None] = field(default_factory=list)

    def stable(self, stable_text: str) -> str:
        """The delta for an interim's stable text ("" when nothing is new)."""
        if not stable_text.startswith(self.sent):
            return ""
        delta = stable_text[len(self.sent) :]
        self.sent = stable_text
        return delta

    def final(self, text: str) -> tuple[str, str]:
        """(last delta, completed transcript) for the final text: the completed transcript
        always starts with what was sent."""
        words = text.split()
        if not self.sent:
            self.origin = list(range(len(words)))
            self.sent = text
            return text, text
        sent_words = self.sent.split()
        # Align the sent words with the final's; the final resumes where the sent words end:
        # past the last matching run, by as many words as the sent ones left after it.
        matcher = SequenceMatcher(
            None,
            [comparable_word(w) for w in sent_words],
            [comparable_word(w) for w in words],
            autojunk=False,
        )
        origin: list[int | None] = [None] * len(sent_words)
        a_end = b_end = 0
        for a, b, size in matcher.get_matching_blocks():
            origin[a : a + size] = range(b, b + size)
            if size:
                a_end, b_end = a + size, b + size
        resume = min(b_end + len(sent_words) - a_end, len(words))
        self.diverged = None in origin or resume != len(sent_words)
        self.origin = origin + list(range(resume, len(words)))
        transcript = " ".join([self.sent, *words[resume:]])
        delta = transcript[len(self.sent) :]
        self.sent = transcript
        return delta, transcript


@dataclass
class _Item:
    id: str
    start: float  # seconds of session audio
    text: AppendOnlyText = field(default_factory=AppendOnlyText)
    failed: bool = False


def _logprobs(
    transcript: str, origin: list[int | None], words: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """One entry per word of the transcript, in OpenAI's token shape, with the probability the
    final's decoder gave the word it stands for (`MIN_PROBABILITY` for a word it did not hear:
    a sent word the final disagreed with)."""
    out = []
    for i, (word, at) in enumerate(zip(transcript.split(), origin, strict=False)):
        token = word if i == 0 else " " + word
        # the final's words and its text split alike but for rare tokenisations: clamp
        p = words[at]["confidence"] if at is not None and at < len(words) else MIN_PROBABILITY
        out.append(
            {
                "token": token,
                "logprob": round(math.log(max(p, MIN_PROBABILITY)), 4),
                "bytes": list(token.encode()),
            }
        )
    return out


class EventTranslator:
    """Pure: one stream message in, the realtime events it means out.

    Args:
        new_item_id: a fresh `item_...` id.
        logprobs: whether `completed` carries `logprobs`.
    """

    def __init__(self, new_item_id: Callable[[], str], *, logprobs: bool = False) -> None:
        self._new_item_id = new_item_id
        self.logprobs = logprobs
        self._manual = False
        self._offset = 0.0  # seconds of session audio before the current stream session
        self._items: dict[int, _Item] = {}  # by the stream session's utterance id
        self._previous_item: str | None = None
        # per client commit, in order: whether it closed an utterance (else its item is empty)
        self._commits: collections.deque[bool] = collections.deque()

    def begin(self, *, offset_s: float, manual: bool) -> None:
        """A new stream session starts (its times restart at 0, its utterance ids at 1)."""
        self._offset = offset_s
        self._manual = manual
        self._items.clear()

    def commit_requested(self, closes_utterance: bool) -> None:
        """A client commit went to the stream session; its `flushed` will follow."""
        self._commits.append(closes_utterance)

    def translate(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        kind = message["type"]
        if kind == "speech_started":
            started = _Item(self._new_item_id(), self._offset + message["start"])
            self._items[message["utterance_id"]] = started
            if self._manual:
                return []
            return [
                server_event(
                    "input_audio_buffer.speech_started",
                    audio_start_ms=ms(started.start),
                    item_id=started.id,
                )
            ]
        item = self._items.get(message.get("utterance_id", 0))
        if kind == "interim":
            delta = item.text.stable(message["stable_text"]) if item else ""
            return [self._delta(item.id, delta)] if item and delta else []
        if kind in ("final", "speech_ended"):
            if item is None:  # speech_ended after its final, or an utterance cleared
                return []
            if kind == "final":
                return self._complete(item, message["end"], message["text"], message["words"])
            return self._complete(item, message["end"], "", [], failed=item.failed)
        if kind == "error" and message.get("code") == INTERNAL:
            # a failed decode; its speech_ended follows
            for item in self._items.values():
                item.failed = True
            return []
        if kind == "flushed":  # a client commit is through
            if self._commits and not self._commits.popleft():
                item_id = self._new_item_id()
                events = self._commit(item_id, self._offset, spoken=False)
                empty: list[dict[str, Any]] | None = [] if self.logprobs else None
                return [*events, self._completed(item_id, "", 0.0, empty)]
            return []
        if kind == CLEARED:
            self._items.clear()
            return [server_event(CLEARED)]
        return []

    def _delta(self, item_id: str, delta: str) -> dict[str, Any]:
        return server_event(f"{TRANSCRIPTION}.delta", item_id=item_id, content_index=0, delta=delta)

    def _commit(self, item_id: str, end: float, *, spoken: bool = True) -> list[dict[str, Any]]:
        events = []
        if spoken and not self._manual:  # an item the VAD saw start also stops
            events.append(
                server_event(
                    "input_audio_buffer.speech_stopped", audio_end_ms=ms(end), item_id=item_id
                )
            )
        events.append(
            server_event(
                "input_audio_buffer.committed",
                item_id=item_id,
                previous_item_id=self._previous_item,
            )
        )
        self._previous_item = item_id
        return events

    def _complete(
        self,
        item: _Item,
        end_s: float,
        text: str,
        words: list[dict[str, Any]],
        *,
        failed: bool = False,
    ) -> list[dict[str, Any]]:
        self._items = {uid: held for uid, held in self._items.items() if held is not item}
        end = self._offset + end_s
        events = self._commit(item.id, end)
        if failed:
            events.append(
                server_event(
                    f"{TRANSCRIPTION}.failed",
                    item_id=item.id,
                    content_index=0,
                    error={
                        "type": "server_error",
                        "code": INTERNAL,
                        "message": "Transcription of this item failed.",
                        "param": None,
                    },
                )
            )
            return events
        sent = item.text.sent
        delta, transcript = item.text.final(text)
        if item.text.diverged:  # rare, and what a wrong stable word costs: worth counting
            logger.info(
                "realtime item %s: the final disagreed with the deltas sent; completed keeps them",
                item.id,
                extra={"lk.pii.data": {"deltas": sent, "final": text}},
            )
        if delta:
            events.append(self._delta(item.id, delta))
        logprobs = _logprobs(transcript, item.text.origin, words) if self.logprobs else None
        events.append(self._completed(item.id, transcript, max(0.0, end - item.start), logprobs))
        return events

    def _completed(
        self,
        item_id: str,
        transcript: str,
        seconds: float,
        logprobs: list[dict[str, Any]] | None,
    ) -> dict[str, Any]:
        event = server_event(
            f"{TRANSCRIPTION}.completed",
            item_id=item_id,
            content_index=0,
            transcript=transcript,
            usage={"type": "duration", "seconds": round(seconds, 3)},
        )
        if logprobs is not None:
            event["logprobs"] = logprobs
        return event
