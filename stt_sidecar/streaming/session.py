"""One streaming session: PCM in, VAD-endpointed utterances, interims and finals out, in order.

Timeline of an utterance (times are stream audio, 16 kHz samples):

    speech_started ─ interims every STT_INTERIM_INTERVAL_MS ─ silence ─┬─ speculative final
                                                                       │  decode starts early
                                                 STT_ENDPOINT_SILENCE_MS reached: final, then
                                                 speech_ended (the speculative result is used
                                                 when no speech came after it started)

Finals decode the whole utterance and are never dropped. A stream has at most one interim
decode queued, cancelled when its utterance ends, and only the newest interim waits in the
outbox: under load interims are what gives way.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..audio_format import SAMPLE_RATE
from ..config import SidecarSettings
from ..metrics import SidecarMetrics
from ..scheduler import DecodeFailed, DecodeResult, Priority
from . import protocol
from .audio_input import PcmTo16k, SampleBuffer
from .interims import interim_due, interim_interval
from .language_detection import transcribe_in_allowed_language
from .transcripts import (
    FinalText,
    StableText,
    audible_end,
    final_options,
    hypothesis_text,
    interim_options,
    shape_final,
)
from .vad import WINDOW, StreamingVAD

logger = logging.getLogger("stt_sidecar.stream")

SPEECH_ONSET = 0.5  # VAD probability that starts an utterance
SPEECH_CONTINUE = 0.35  # below this a window counts as silence (hysteresis)
PRE_ROLL_S = 0.4  # Silero fires ~0.2 s after the first phoneme: keep some audio before it
POST_PAD_S = 0.3  # silence kept after the last speech window for the final's decode
SPECULATIVE_SILENCE_S = 0.15  # start the final's decode this early in a pause
INTERIM_MIN_WINDOW_S = 15.0  # shorter encoder windows for interims cost accuracy below ~15 s
MAX_BACKLOG = 8  # finals/events not yet sent before we stop reading the client's audio


class BusyFraction(Protocol):
    def fraction(self) -> float: ...


class SessionScheduler(Protocol):
    """What a session needs of `scheduler.DecodeScheduler`: a unit test passes a fake."""

    @property
    def busy(self) -> BusyFraction: ...

    @property
    def queue_depth(self) -> int: ...

    @property
    def batch_running(self) -> bool: ...

    async def transcribe(
        self,
        audio: np.ndarray,
        options: dict[str, Any],
        priority: Priority,
        *,
        owner: Hashable | None = None,
        encoder_window_s: float | None = None,
    ) -> DecodeResult: ...


class SpeechProbabilities(Protocol):
    """What a session needs of `vad.StreamingVAD`: one probability per completed window."""

    def process(self, audio: np.ndarray) -> np.ndarray: ...


class SlowConsumer(Exception):
    """The client stopped reading: a send to it was blocked too long."""


def _seconds(samples: int) -> float:
    return samples / SAMPLE_RATE


@dataclass
class Utterance:
    id: int
    start: int  # first sample of its audio (pre-roll included)
    onset: int  # first sample of the window where the VAD fired
    last_speech_end: int
    last_speech_wall: float
    silence: int = 0  # samples of silence since last_speech_end
    probs: list[float] = field(default_factory=list)  # one per VAD window since onset
    interim_at: int = 0  # buffer end at the last interim snapshot
    stable: StableText = field(default_factory=StableText)
    speculation: asyncio.Task[FinalText | None] | None = None
    speculation_speech_end: int = -1


@dataclass
class PendingFinal:
    utterance_id: int
    decode: asyncio.Task[FinalText | None]
    fallback_end: float
    audible_end: float
    speech_end_wall: float


class StreamSession:
    """Protocol-level state of one WebSocket stream; the handler feeds it messages.

    Args:
        session_id: sent in `ready` and logged.
        config: the validated `config` message.
        scheduler: where decodes go (the app's `DecodeScheduler`).
        settings: endpointing, utterance and interim settings.
        metrics: the app's metrics.
        send: coroutine function sending one JSON-able message to the client.
        vad: speech probabilities per `WINDOW`; Silero (`StreamingVAD`) unless given.
    """

    def __init__(
        self,
        session_id: str,
        config: protocol.StreamConfig,
        *,
        scheduler: SessionScheduler,
        settings: SidecarSettings,
        metrics: SidecarMetrics,
        send: Callable[[dict[str, Any]], Any],
        vad: SpeechProbabilities | None = None,
    ) -> None:
        s = settings
        self.id = session_id
        self.config = config
        self._scheduler = scheduler
        self._metrics = metrics
        self._send = send
        self._convert = PcmTo16k(config.sample_rate, config.channels)
        self._vad = vad if vad is not None else StreamingVAD()
        self._max_utterance = int(s.max_utterance_s * SAMPLE_RATE)
        self._endpoint = int(s.endpoint_silence_ms / 1000 * SAMPLE_RATE)
        self._speculative = min(int(SPECULATIVE_SILENCE_S * SAMPLE_RATE), self._endpoint)
        self._interim_interval = int(s.interim_interval_ms / 1000 * SAMPLE_RATE)
        self._pre_roll = int(PRE_ROLL_S * SAMPLE_RATE)
        self._post_pad = int(POST_PAD_S * SAMPLE_RATE)
        self._buffer = SampleBuffer(self._max_utterance + self._pre_roll + 2 * SAMPLE_RATE)
        self._vad_cursor = 0  # absolute sample index of the next VAD window
        self._next_utterance_id = 1
        self._utterance: Utterance | None = None
        self._final_options = final_options(config)
        self._interim_options = interim_options(config)
        # ordered items: a message dict or a PendingFinal; the interim slot holds the newest only
        self._ordered: collections.deque[dict[str, Any] | PendingFinal] = collections.deque()
        self._interim: dict[str, Any] | None = None
        self._announced = 0  # last utterance id whose speech_started was sent
        self._finalized = 0  # last utterance id whose final/speech_ended was sent
        self._wake_sender = asyncio.Event()
        self._wake_interims = asyncio.Event()
        self._input_done = False
        self._backlog_shrunk = asyncio.Event()
        self._slow_consumer = False
        self._interim_decode: asyncio.Task[DecodeResult] | None = None
        # None once `aclose` has stopped them
        self._sender: asyncio.Task[None] | None = asyncio.create_task(
            self._send_loop(), name=f"stream-{session_id}-send"
        )
        self._interims: asyncio.Task[None] | None = asyncio.create_task(
            self._interim_loop(), name=f"stream-{session_id}-interims"
        )
        self._speculations: set[asyncio.Task[Any]] = set()

    # -- input -----------------------------------------------------------------------------
    def feed(self, pcm: bytes) -> None:
        """Take one binary frame (already validated for size and alignment)."""
        if self._input_done:
            return
        samples = self._convert.convert(pcm)
        self._metrics.stream_audio_seconds.inc(_seconds(samples.size))
        self._ingest(samples)

    def _ingest(self, samples: np.ndarray) -> None:
        if samples.size == 0:
            return
        self._buffer.append(samples)
        for prob in self._vad.process(samples):
            self._on_window(self._vad_cursor, float(prob))
            self._vad_cursor += WINDOW
        if self._utterance is None:
            # only the pre-roll is needed while nobody speaks
            self._buffer.drop_before(self._vad_cursor - self._pre_roll)
        elif self.config.interim_results:
            self._wake_interims.set()

    def _on_window(self, begin: int, prob: float) -> None:
        end = begin + WINDOW
        utterance = self._utterance
        if utterance is None:
            if prob >= SPEECH_ONSET:
                self._open_utterance(begin, max(self._buffer.start, begin - self._pre_roll))
            return
        utterance.probs.append(prob)
        if prob >= SPEECH_CONTINUE:
            utterance.last_speech_end = end
            utterance.last_speech_wall = time.monotonic()
            utterance.silence = 0
            if utterance.speculation is not None:
                # the pause was inside the utterance: its early decode is stale
                utterance.speculation.cancel()
                utterance.speculation = None
        else:
            utterance.silence += WINDOW
        if utterance.silence >= self._endpoint:
            self._close_utterance(min(end, utterance.last_speech_end + self._post_pad))
        elif utterance.silence >= self._speculative and utterance.speculation is None:
            self._speculate(utterance, end)
        elif end - utterance.start >= self._max_utterance:
            self._cut_long_utterance(utterance)

    def _open_utterance(self, onset: int, start: int) -> None:
        utterance = Utterance(
            id=self._next_utterance_id,
            start=start,
            onset=onset,
            last_speech_end=onset + WINDOW,
            last_speech_wall=time.monotonic(),
            interim_at=onset,
        )
        self._next_utterance_id += 1
        self._utterance = utterance
        self._push(protocol.speech_started(utterance.id, _seconds(onset)))

    # -- finals ----------------------------------------------------------------------------
    def _decode_final(self, utterance: Utterance, end: int) -> asyncio.Task[FinalText | None]:
        audio = self._buffer.slice(utterance.start, end)
        return asyncio.create_task(
            self._run_final_decode(
                audio,
                _seconds(utterance.start),
                _seconds(utterance.onset),
                _seconds(min(utterance.last_speech_end, end)),
            )
        )

    async def _run_final_decode(
        self, audio: np.ndarray, offset: float, speech_start: float, speech_end: float
    ) -> FinalText | None:
        result = await transcribe_in_allowed_language(
            self._scheduler,
            audio,
            self._final_options,
            self.config.allowed_languages,
            Priority.FINAL,
            owner=self.id,
        )
        self._metrics.decode_seconds.labels(kind="final").observe(result.decode_seconds)
        return shape_final(result.segments, result.info.language, offset, speech_start, speech_end)

    def _speculate(self, utterance: Utterance, end: int) -> None:
        utterance.speculation = self._decode_final(utterance, end)
        utterance.speculation_speech_end = utterance.last_speech_end
        self._speculations.add(utterance.speculation)
        utterance.speculation.add_done_callback(self._forget_speculation)

    def _forget_speculation(self, task: asyncio.Task[Any]) -> None:
        self._speculations.discard(task)
        if not task.cancelled():
            task.exception()  # a discarded speculation's failure is not news

    def _close_utterance(self, end: int) -> None:
        """End the current utterance at `end` and queue its final (never dropped)."""
        utterance = self._utterance
        assert utterance is not None
        self._utterance = None
        if self._interim_decode is not None:
            self._interim_decode.cancel()  # its utterance is over: the final says it all
        spec = utterance.speculation
        if (
            spec is not None
            and utterance.speculation_speech_end == utterance.last_speech_end
            and end >= utterance.last_speech_end
        ):
            decode = spec  # no speech since it started: same words, already (partly) decoded
        else:
            if spec is not None:
                spec.cancel()
            decode = self._decode_final(utterance, end)
        self._push(
            PendingFinal(
                utterance_id=utterance.id,
                decode=decode,
                fallback_end=_seconds(min(utterance.last_speech_end, end)),
                audible_end=audible_end(
                    self._buffer.slice(utterance.onset, end), _seconds(utterance.onset)
                ),
                speech_end_wall=utterance.last_speech_wall,
            )
        )
        self._buffer.drop_before(end)

    def _cut_long_utterance(self, utterance: Utterance) -> None:
        """At STT_MAX_UTTERANCE_S, cut at the most pause-like window of the second half."""
        probs = np.asarray(utterance.probs)
        first = len(probs) // 2
        tail = probs[first:]
        # latest of the quietest windows: the longest first part, cut between words
        pick = first + int(len(tail) - 1 - np.argmin(tail[::-1]))
        cut = utterance.onset + pick * WINDOW + WINDOW // 2
        remaining = utterance.probs[pick + 1 :]
        self._close_utterance(cut)
        self._open_utterance(cut, cut)
        assert self._utterance is not None
        self._utterance.probs = list(remaining)

    # -- control messages ------------------------------------------------------------------
    def flush(self) -> None:
        """Finalize what has been said so far, then `flushed`."""
        self._finalize_now()
        self._push(protocol.flushed())

    def _finalize_now(self) -> None:
        if self._utterance is not None:
            self._close_utterance(self._buffer.end)

    async def finish(self, closing_message: dict[str, Any] | None) -> None:
        """End of input: finalize everything, send it all (then `closing_message`)."""
        if not self._input_done:
            self._input_done = True
            self._ingest(self._convert.flush())
            self._finalize_now()
        if closing_message is not None:
            self._push(closing_message)
        self._ordered.append(_END)
        self._wake_sender.set()
        if self._sender is not None:
            await asyncio.shield(self._sender)
        # Everything is sent. The interim loop would otherwise wait forever for audio that will
        # not come: a pending task (and the whole session) leaked per closed stream.
        await self.aclose()

    async def aclose(self) -> None:
        """Stop at once (client gone): cancel every task this session started. Idempotent."""
        tasks: list[asyncio.Task[Any]] = [
            t for t in (self._sender, self._interims) if t is not None
        ]
        tasks.extend(self._speculations)
        for item in self._ordered:
            if isinstance(item, PendingFinal):
                tasks.append(item.decode)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._ordered.clear()
        # A cancelled task keeps its CancelledError, whose traceback holds the task's frames and
        # through them this session: a cycle only the cyclic GC frees, so every closed stream's
        # audio buffer (1.4 MB) stayed allocated until it ran (RSS +400 MB after 2,000 aborted
        # streams). Dropping our references to the finished tasks lets refcounting free it now.
        self._sender = self._interims = None
        self._speculations.clear()
        self._utterance = None

    # -- output ----------------------------------------------------------------------------
    def _push(self, item: dict[str, Any] | PendingFinal) -> None:
        self._ordered.append(item)
        self._wake_sender.set()

    async def wait_for_backlog(self) -> None:
        """Backpressure: while too much is waiting to be decoded or sent, stop taking audio.

        A client sending faster than the decoder keeps up is slowed down by TCP instead of
        growing our memory, and loses nothing.

        Raises:
            SlowConsumer: the client stopped reading (a send timed out), so nothing more can
                be delivered.
        """
        while len(self._ordered) >= MAX_BACKLOG:
            if self._slow_consumer:
                raise SlowConsumer()
            self._backlog_shrunk.clear()
            await self._backlog_shrunk.wait()

    async def _send_loop(self) -> None:
        try:
            await self._deliver()
        except SlowConsumer:
            self._slow_consumer = True
            self._backlog_shrunk.set()  # wakes wait_for_backlog, which tells the handler

    async def _deliver(self) -> None:
        while True:
            if self._ordered:
                item = self._ordered[0]
                if item is _END:
                    return
                if isinstance(item, PendingFinal):
                    messages = await self._complete_final(item)
                else:
                    messages = [item]
                self._ordered.popleft()
                self._backlog_shrunk.set()
                for message in messages:
                    await self._send(message)
                    if message["type"] == "speech_started":
                        self._announced = message["utterance_id"]
                    elif message["type"] == "speech_ended":
                        self._finalized = message["utterance_id"]
                continue
            if self._interim is not None:
                message, self._interim = self._interim, None
                uid = message["utterance_id"]
                if self._finalized < uid <= self._announced:
                    await self._send(message)
                else:
                    self._metrics.interims_dropped.inc()
                continue
            self._wake_sender.clear()
            await self._wake_sender.wait()

    async def _complete_final(self, pending: PendingFinal) -> list[dict[str, Any]]:
        try:
            text = await pending.decode
        except DecodeFailed:
            self._metrics.errors.labels(code=protocol.INTERNAL).inc()
            return [
                protocol.error_message(protocol.INTERNAL, "transcription of an utterance failed"),
                protocol.speech_ended(pending.utterance_id, pending.fallback_end),
            ]
        messages: list[dict[str, Any]] = []
        end = pending.fallback_end
        if text is not None:
            end = max(text.end, pending.audible_end)
            messages.append(
                protocol.final(
                    pending.utterance_id,
                    text.text,
                    text.start,
                    end,
                    text.confidence,
                    text.language,
                    text.words,
                )
            )
            self._metrics.finals_sent.inc()
            self._metrics.final_latency.observe(time.monotonic() - pending.speech_end_wall)
            logger.debug(
                "session %s final %d: %d words", self.id, pending.utterance_id, len(text.words)
            )
        messages.append(protocol.speech_ended(pending.utterance_id, end))
        return messages

    # -- interims --------------------------------------------------------------------------
    def _interim_interval_now(self) -> int:
        # Under load interims thin out first, so finals keep their latency. With batch pieces
        # on the other workers, streams share one worker, where a running interim is what a
        # final waits for: thinner still.
        if self._scheduler.batch_running:
            return self._interim_interval * 4
        if self._scheduler.queue_depth > 0 or self._scheduler.busy.fraction() > 0.8:
            return self._interim_interval * 2
        return self._interim_interval

    async def _interim_loop(self) -> None:
        while True:
            await self._wake_interims.wait()
            self._wake_interims.clear()
            utterance = self._utterance
            if utterance is None or utterance.silence > 0:
                continue  # nobody speaks, or a pause began (interims.py says why)
            grown = self._buffer.end - utterance.interim_at
            # the cheap test first: this runs for every incoming frame
            if grown < self._interim_interval:
                continue
            interval = interim_interval(
                self._interim_interval_now(), first=utterance.interim_at == utterance.onset
            )
            if grown < interval or not interim_due(
                utterance.probs,
                -(-(utterance.interim_at - utterance.onset) // WINDOW),
                needed_windows=interval // WINDOW,
                threshold=SPEECH_CONTINUE,
            ):
                continue
            utterance.interim_at = self._buffer.end
            audio = self._buffer.slice(utterance.start, self._buffer.end)
            decode = asyncio.create_task(
                transcribe_in_allowed_language(
                    self._scheduler,
                    audio,
                    self._interim_options,
                    self.config.allowed_languages,
                    Priority.INTERIM,
                    owner=self.id,
                    encoder_window_s=max(INTERIM_MIN_WINDOW_S, audio.size / SAMPLE_RATE + 1.0),
                )
            )
            self._interim_decode = decode
            try:
                # wait() rather than await: cancelling the decode (its utterance ended) must not
                # look like cancelling this loop
                await asyncio.wait({decode})
            finally:
                self._interim_decode = None
                if not decode.done():
                    decode.cancel()
            if decode.cancelled() or decode.exception() is not None:
                self._metrics.interims_dropped.inc()
                continue
            result = decode.result()
            self._metrics.decode_seconds.labels(kind="interim").observe(result.decode_seconds)
            if self._utterance is not utterance:
                self._metrics.interims_dropped.inc()  # its final is on the way
                continue
            hypothesis = hypothesis_text(result.segments)
            if not hypothesis:
                continue
            text, stable = utterance.stable.update(hypothesis)
            if self._interim is not None:
                self._metrics.interims_dropped.inc()
            self._interim = protocol.interim(
                utterance.id,
                text,
                stable,
                _seconds(utterance.onset),
                _seconds(utterance.start + audio.size),
                result.info.language,
            )
            self._wake_sender.set()


_END: dict[str, Any] = {"type": "__end__"}  # sentinel: the sender stops after what precedes it
