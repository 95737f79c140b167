"""One streaming session: PCM in, VAD-endpointed utterances, interims and finals out, in order.

Timeline of an utterance (times are stream audio, 16 kHz samples):

    speech_started ─ interims every STT_INTERIM_INTERVAL_MS ─ silence ─┬─ speculative final
                                                                       │  decode starts early
                                                 the endpoint's silence reached: final, then
                                                 speech_ended (the speculative result is used
                                                 when no speech came after it started)

The endpoint's silence is STT_ENDPOINT_SILENCE_MS, or with adaptive endpointing what the
speculative text asks for (`endpointing.py`). An utterance that starts right after the last one
is decoded after that one's audio (`continuation.py`); with context on, finals are prompted with
the stream's recent finals (`context.py`).

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
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..audio_format import SAMPLE_RATE
from ..config import SidecarSettings
from ..metrics import SidecarMetrics
from ..scheduler import DecodeFailed, DecodeResult, Priority
from . import protocol
from .audio_input import PcmTo16k, SampleBuffer
from .context import UtteranceContext, final_runaway, runaway, said_twice
from .continuation import (
    PreviousUtterance,
    echoed_words,
    sent_word_list,
    sent_words,
    without_first_words,
    word_count,
    words_from,
)
from .encoder_windows import encoder_window_s as streaming_encoder_window_s
from .endpointing import Endpoint, EndpointPolicy, speculative_endpoint
from .interims import interim_due, interim_interval
from .language_detection import transcribe_in_allowed_language
from .skipped_speech import skipped_from, words_until
from .transcripts import (
    FinalText,
    StableText,
    attach_sentence_stops,
    audible_end,
    confident,
    final_options,
    hypothesis_text,
    interim_options,
    joined_finals,
    shape_final,
)
from .vad import WINDOW, StreamingVAD

if TYPE_CHECKING:
    from faster_whisper.transcribe import Segment

logger = logging.getLogger("stt_sidecar.stream")

SPEECH_ONSET = 0.5  # VAD probability that starts an utterance
SPEECH_CONTINUE = 0.35  # below this a window counts as silence (hysteresis)
PRE_ROLL_S = 0.4  # Silero fires ~0.2 s after the first phoneme: keep some audio before it
POST_PAD_S = 0.3  # silence kept after the last speech window for the final's decode
MAX_BACKLOG = 8  # finals/events not yet sent before we stop reading the client's audio
MAX_HELD_S = 2.0  # audio held for an endpoint decision before we stop reading the client's
# Longest wait for the speculative text once a pause passes the short silence; then the pause
# is judged as the fixed endpoint would. An overloaded decoder must not make a real-time
# stream fall further and further behind (measured without a bound: p95 20 s with two streams
# on a box at load 8). 1 s made every decision fall back at load 8 (decodes took 1-3 s there).
MAX_TEXT_WAIT_S = 2.0


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

    @property
    def english_only(self) -> bool: ...

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


@dataclass(frozen=True)
class EndpointingOverrides:
    """Per-stream endpointing, for clients that choose it (OpenAI Realtime's `turn_detection`).

    None keeps the server's value. `manual`: only the client ends an utterance (`flush`), never
    silence; every audio frame then belongs to the open utterance.
    """

    onset: float | None = None  # VAD probability that starts an utterance
    pre_roll_s: float | None = None  # audio kept before the onset
    silence_ms: int | None = None  # silence that ends an utterance
    manual: bool = False


NEVER = 2**62  # samples of silence that never come: the client ends its utterances


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
    endpoint: Endpoint | None = None  # None until the speculative text picks one
    waiting_since: float | None = None  # monotonic time audio began waiting for that text


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
        endpointing: the client's own endpointing choices, if any.
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
        endpointing: EndpointingOverrides | None = None,
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
        self._endpointing = EndpointPolicy.from_ms(
            adaptive=s.adaptive_endpointing
            if config.endpointing is None
            else config.endpointing == "adaptive",
            default_ms=s.endpoint_silence_ms,
            short_ms=s.endpoint_short_ms,
            long_ms=s.endpoint_long_ms,
        )
        self._speculative = self._endpointing.speculate
        self._context = UtteranceContext(
            enabled=s.stream_context
            if config.condition_on_previous_text is None
            else config.condition_on_previous_text,
            base_prompt=config.prompt,
        )
        self._interim_interval = int(s.interim_interval_ms / 1000 * SAMPLE_RATE)
        self._pre_roll = int(PRE_ROLL_S * SAMPLE_RATE)
        self._post_pad = int(POST_PAD_S * SAMPLE_RATE)
        self._apply_overrides(endpointing or EndpointingOverrides())
        self._buffer = SampleBuffer(self._max_utterance + self._pre_roll + 2 * SAMPLE_RATE)
        self._vad_cursor = 0  # absolute sample index of the next VAD window
        # VAD windows not applied yet: held while an endpoint waits for its speculative text
        self._held: collections.deque[float] = collections.deque()
        self._text_wait_timer: asyncio.TimerHandle | None = None
        self._next_utterance_id = 1
        self._utterance: Utterance | None = None
        self._final_options = final_options(config)
        # Not while detecting each utterance's language: the earlier audio would pick it
        detecting = self._final_options["language"] is None
        self._previous = PreviousUtterance(
            0 if detecting else int(s.continuation_gap_ms / 1000 * SAMPLE_RATE)
        )
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

    def _apply_overrides(self, o: EndpointingOverrides) -> None:
        self._onset = SPEECH_ONSET if o.onset is None else o.onset
        self._continue = min(SPEECH_CONTINUE, self._onset * 0.7)  # keep the hysteresis
        self._manual = o.manual
        if o.pre_roll_s is not None:
            self._pre_roll = int(o.pre_roll_s * SAMPLE_RATE)
        if o.manual:
            # silence never ends an utterance, so nothing to speculate on either
            self._endpointing = EndpointPolicy(
                adaptive=False, default=NEVER, short=NEVER, long=NEVER, speculate=NEVER
            )
        elif o.silence_ms is not None:
            # the client chose its silence: a fixed endpoint, whatever the server's default
            self._endpointing = EndpointPolicy.from_ms(
                adaptive=False,
                default_ms=o.silence_ms,
                short_ms=o.silence_ms,
                long_ms=o.silence_ms,
            )
        self._speculative = self._endpointing.speculate

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
        self._held.extend(float(p) for p in self._vad.process(samples))
        self._apply_windows()

    def _apply_windows(self, *, force: bool = False) -> None:
        """Run the VAD windows received, unless (and until) an endpoint waits for its text.

        Waiting makes the decision depend on the text alone, not on whether the decode kept up
        with the audio: a client sending faster than real time gets the same utterances.
        """
        while self._held and (force or not self._waiting_for_text()):
            self._on_window(self._vad_cursor, self._held.popleft())
            self._vad_cursor += WINDOW
        if len(self._held) * WINDOW < MAX_HELD_S * SAMPLE_RATE:
            self._backlog_shrunk.set()
        if self._utterance is None:
            # only the pre-roll is needed while nobody speaks
            self._buffer.drop_before(self._vad_cursor - self._pre_roll)
        elif self.config.interim_results:
            self._wake_interims.set()

    def _on_window(self, begin: int, prob: float) -> None:
        end = begin + WINDOW
        utterance = self._utterance
        if utterance is None:
            if prob >= self._onset or self._manual:
                self._open_utterance(begin, max(self._buffer.start, begin - self._pre_roll))
            return
        utterance.probs.append(prob)
        if prob >= self._continue:
            utterance.last_speech_end = end
            utterance.last_speech_wall = time.monotonic()
            utterance.silence = 0
            if utterance.speculation is not None:
                # the pause was inside the utterance: its early decode is stale
                utterance.speculation.cancel()
                utterance.speculation = None
                utterance.endpoint = None
                utterance.waiting_since = None
        else:
            utterance.silence += WINDOW
        if utterance.silence >= self._endpoint_silence(utterance):
            self._end_by_silence(utterance, end)
        elif utterance.silence >= self._speculative and utterance.speculation is None:
            self._speculate(utterance, end)
        elif end - utterance.start >= self._max_utterance:
            self._cut_long_utterance(utterance)

    def _waiting_for_text(self) -> bool:
        # A pause past the short silence is where the text decides: end now, or wait longer.
        utterance = self._utterance
        if (
            utterance is None
            or utterance.endpoint is not None
            or utterance.speculation is None  # its callback sets `endpoint`
            or not self._endpointing.adaptive
            or utterance.silence < self._endpointing.short
        ):
            return False
        now = time.monotonic()
        if utterance.waiting_since is None:
            utterance.waiting_since = now
            # Held audio stops the reading of the client (backpressure), so no new frame may
            # come to notice the deadline: a timer does.
            self._cancel_text_wait_timer()
            self._text_wait_timer = asyncio.get_running_loop().call_later(
                MAX_TEXT_WAIT_S + 0.01, self._apply_windows
            )
        return now - utterance.waiting_since <= MAX_TEXT_WAIT_S

    def _cancel_text_wait_timer(self) -> None:
        if self._text_wait_timer is not None:
            self._text_wait_timer.cancel()
            self._text_wait_timer = None

    def _endpoint_silence(self, utterance: Utterance) -> int:
        if utterance.endpoint is None:
            return self._endpointing.default  # no text (none yet, or flushed): as fixed
        return self._endpointing.silence_for(utterance.endpoint)

    def _end_by_silence(self, utterance: Utterance, silence_end: int) -> None:
        endpoint = utterance.endpoint or Endpoint.DEFAULT
        self._metrics.endpoints.labels(decision=endpoint.value).inc()
        self._close_utterance(min(silence_end, utterance.last_speech_end + self._post_pad))

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
        prompt = self._context.prompt(_seconds(utterance.start))
        options = self._final_options
        if prompt != options["initial_prompt"]:
            options = {**options, "initial_prompt": prompt}
        context = self._previous.context_for(utterance.start, utterance.onset, audio.size)
        context_samples = 0
        if context is not None:
            audio = np.concatenate([context, audio])
            context_samples = context.size
        earlier_final = self._previous.final if context is not None else None
        return asyncio.create_task(
            self._run_final_decode(
                audio,
                options,
                _seconds(utterance.start - context_samples),
                _seconds(utterance.onset),
                _seconds(min(utterance.last_speech_end, end)),
                context_samples=context_samples,
                earlier_final=earlier_final,
                speech_windows=self._speech_windows(utterance, end),
            )
        )

    def _speech_windows(self, utterance: Utterance, end: int) -> np.ndarray:
        """Stream times where the utterance's VAD windows taken for speech begin, up to `end`
        (`probs` starts with the window after the onset's)."""
        probs = np.asarray(utterance.probs[: max(0, (end - utterance.onset) // WINDOW - 1)])
        begins = utterance.onset + WINDOW * (1 + np.flatnonzero(probs >= self._continue))
        return begins / SAMPLE_RATE

    async def _run_final_decode(
        self,
        audio: np.ndarray,
        options: dict[str, Any],
        offset: float,
        speech_start: float,
        speech_end: float,
        *,
        retry: bool = True,
        context_samples: int = 0,
        earlier_final: asyncio.Task[FinalText | None] | None = None,
        speech_windows: np.ndarray | None = None,
    ) -> FinalText | None:
        """Decode a final. `offset`: stream time of `audio[0]`; `context_samples`: the
        previous utterance's audio at the start of `audio`, whose words are not this final's,
        and `earlier_final` its final's decode (continuation.py); `speech_windows`: stream
        times of the VAD's speech windows, to find speech the decode stopped short of
        (skipped_speech.py; None: not looked for)."""
        seconds = _seconds(audio.size)
        # Whisper's own window for the retry, and with the earlier finals as the prompt
        # (encoder_windows.py says why)
        with_context = options["initial_prompt"] != self._final_options["initial_prompt"]
        window = (
            None
            if with_context or not retry
            else streaming_encoder_window_s(
                seconds, final=True, english_only=self._scheduler.english_only
            )
        )
        result = await transcribe_in_allowed_language(
            self._scheduler,
            audio,
            options,
            self.config.allowed_languages,
            Priority.FINAL,
            owner=self.id,
            encoder_window_s=window,
        )
        self._metrics.decode_seconds.labels(kind="final").observe(result.decode_seconds)
        segments, stop = attach_sentence_stops(result.segments)
        skipped = (
            None
            if speech_windows is None
            else skipped_from(segments, speech_end - offset, speech_windows - offset)
        )
        if context_samples:
            context_s = _seconds(context_samples)
            own = words_from(segments, context_s)
            own_text = hypothesis_text(own)
            alone = (
                not own
                # none placed in the earlier audio, whose final had some
                or (word_count(own) == word_count(segments) and sent_words(earlier_final))
                or final_runaway(hypothesis_text(segments), seconds)
                or final_runaway(own_text, seconds - context_s)
                or said_twice(own_text)
                # it stopped before the new speech began (skipped_speech.py)
                or (skipped is not None and skipped < speech_start - offset)
            )
            self._metrics.continuations.labels(outcome="alone" if alone else "kept").inc()
            if alone:
                # no word placed after the previous utterance, none in it (word times not to be
                # trusted), a loop, or nothing heard of it: decode it alone
                return await self._run_final_decode(
                    audio[context_samples:],
                    options,
                    offset + context_s,
                    speech_start,
                    speech_end,
                    speech_windows=speech_windows,
                )
            echoed = echoed_words(segments, context_s, sent_word_list(earlier_final))
            if echoed:
                own = without_first_words(own, echoed)
            if skipped is None:
                if not own:
                    return None  # all it heard, the earlier final sent already
                # its own words were checked for a loop above: no retry on the longer audio
                return shape_final(
                    own, result.info.language, offset, speech_start, speech_end, stop
                )
            heard, skipped = own, max(skipped, context_s)
        else:
            text = shape_final(
                segments, result.info.language, offset, speech_start, speech_end, stop
            )
            if (
                retry
                and (window is not None or with_context)
                and text is not None
                and final_runaway(text.text, seconds)
            ):
                # A loop: a short encoder window (on a fragment, mostly) or the earlier finals
                # as the prompt led the decode astray. Once more, alone, in Whisper's own 30 s
                # window.
                return await self._run_final_decode(
                    audio,
                    self._final_options,
                    offset,
                    speech_start,
                    speech_end,
                    retry=False,
                    speech_windows=speech_windows,
                )
            if skipped is None:
                return text
            heard = segments
        return await self._with_skipped_speech(
            heard,
            skipped,
            audio,
            options,
            offset,
            (speech_start, speech_end),
            result.info.language,
            stop,
        )

    async def _with_skipped_speech(
        self,
        heard: list[Segment],
        skipped_s: float,
        audio: np.ndarray,
        options: dict[str, Any],
        offset: float,
        speech: tuple[float, float],
        language: str,
        stop: float | None,
    ) -> FinalText | None:
        """The words of `heard` up to `skipped_s` (decode time), then those of the audio after
        it, decoded on its own (and not looked at for skipped speech again): the decode
        stopped short of the speech there. `speech`: the VAD's start and end of speech."""
        self._metrics.skipped_speech.inc()
        kept = words_until(heard, skipped_s)
        # the decode's stop probability is its last word's: kept unless that word was dropped
        kept_all = word_count(kept) == word_count(heard)
        head = shape_final(
            kept, language, offset, speech[0], offset + skipped_s, stop if kept_all else None
        )
        start = round(skipped_s * SAMPLE_RATE)
        tail = await self._run_final_decode(
            audio[start:], options, offset + _seconds(start), offset + _seconds(start), speech[1]
        )
        return joined_finals(head, tail)

    def _speculate(self, utterance: Utterance, end: int) -> None:
        utterance.speculation = self._decode_final(utterance, end)
        utterance.speculation_speech_end = utterance.last_speech_end
        self._speculations.add(utterance.speculation)
        utterance.speculation.add_done_callback(self._forget_speculation)
        if self._endpointing.adaptive:
            utterance.speculation.add_done_callback(
                lambda task: self._on_speculative_text(utterance, task)
            )

    def _on_speculative_text(
        self, utterance: Utterance, task: asyncio.Task[FinalText | None]
    ) -> None:
        """Adaptive endpointing: the speculative text picks the silence that ends the utterance."""
        if (
            task.cancelled()
            or utterance is not self._utterance
            or utterance.speculation is not task
        ):
            return  # stale: speech resumed, or the utterance already ended
        failed = task.exception() is not None
        text = None if failed else task.result()
        speech = utterance.speculation_speech_end - utterance.onset
        utterance.endpoint = speculative_endpoint(text, failed=failed, speech_s=_seconds(speech))
        logger.debug(
            "session %s utterance %d: endpoint %s after %d ms, speech ended at %.2f s (stop"
            " probability %s)",
            self.id,
            utterance.id,
            utterance.endpoint.value,
            utterance.silence * 1000 // SAMPLE_RATE,
            _seconds(utterance.speculation_speech_end),
            None if text is None or text.stop_confidence is None else f"{text.stop_confidence:.3f}",
            extra={"lk.pii.data": text.text if text is not None else None},
        )
        if utterance.silence >= self._endpoint_silence(utterance):
            # the pause already lasted long enough (the audio got ahead of the decode)
            self._end_by_silence(utterance, self._vad_cursor)
        self._apply_windows()  # what arrived meanwhile

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
        self._previous.remember(
            self._buffer, utterance.start, end, utterance.last_speech_end, decode
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
    def flush(self) -> bool:
        """Finalize what has been said so far, then `flushed`. True if an utterance was open
        (its final comes before `flushed`)."""
        was_open = self._utterance is not None
        self._finalize_now()
        self._push(protocol.flushed())
        return was_open

    def clear(self, message: dict[str, Any]) -> None:
        """Drop the utterance in progress and the audio held, with no final; then `message`."""
        utterance, self._utterance = self._utterance, None
        if utterance is not None:
            for task in (utterance.speculation, self._interim_decode):
                if task is not None:
                    task.cancel()
        self._interim = None
        self._previous.forget()  # cleared audio is no context either
        # windows held for an endpoint decision are cleared audio too: never applied later
        self._vad_cursor += len(self._held) * WINDOW
        self._held.clear()
        self._cancel_text_wait_timer()
        self._backlog_shrunk.set()
        self._buffer.drop_before(self._buffer.end)
        self._push(message)

    def _finalize_now(self) -> None:
        self._apply_windows(force=True)  # all audio received counts, text or not
        if self._utterance is not None:
            self._close_utterance(self._buffer.end)
        # a flushed (committed) turn was ended on purpose: what follows is no continuation
        self._previous.forget()

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
        self._cancel_text_wait_timer()
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
        while (
            len(self._ordered) >= MAX_BACKLOG
            or len(self._held) * WINDOW >= MAX_HELD_S * SAMPLE_RATE
        ):
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
            self._context.add(text.text, text.end, text.language)
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
                threshold=self._continue,
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
                    encoder_window_s=streaming_encoder_window_s(
                        _seconds(audio.size),
                        final=False,
                        english_only=self._scheduler.english_only,
                    ),
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
            if not hypothesis or runaway(hypothesis, _seconds(audio.size)):
                continue  # a loop is no caption, and must not become stable words
            text, stable = utterance.stable.update(hypothesis, confident=confident(result.segments))
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
