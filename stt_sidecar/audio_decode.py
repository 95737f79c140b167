"""Decode an uploaded audio file to 16 kHz mono int16, with hard limits.

Built on PyAV like `faster_whisper.audio.decode_audio`, but hardened for untrusted uploads:

- The container is recognised from its leading bytes and opened with that one allow-listed
  FFmpeg demuxer (`container_of`). FFmpeg's own probing would pick any of its ~350 demuxers from
  the content, and some of them open other files or sockets: concat, hls, dash, sdp/rtp/rtsp,
  image2 patterns, mov data references. Anything else is refused before FFmpeg sees it.
- Nothing but the in-memory upload can be read: FFmpeg's nested opens go through an `io_open`
  that refuses every URL, the protocol whitelist names no protocol, and MP4/MOV data
  references stay off.
- The decoded duration is capped *while* decoding (a lying header cannot make us allocate more
  than the cap), absurd sample rates are refused before any resampling, and there is no
  `gc.collect()` per call.
"""

from __future__ import annotations

import io
import logging

import av
import numpy as np

from .audio_format import SAMPLE_RATE

logger = logging.getLogger("stt_sidecar.audio")

# Outside this range a "sample rate" is a corrupt or hostile header, not audio: resampling 1 Hz
# to 16 kHz multiplies the sample count by 16000.
MIN_INPUT_RATE = 1000
MAX_INPUT_RATE = 384_000


class AudioDecodeError(Exception):
    """The upload is not usable audio; `message` is safe to send to the client."""

    def __init__(self, message: str, code: str = "invalid_audio") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class AudioTooLongError(AudioDecodeError):
    """The audio runs past the configured maximum duration."""

    def __init__(self, max_seconds: float) -> None:
        super().__init__(
            f"Audio is longer than the maximum of {max_seconds:g} s.", code="audio_too_long"
        )


# The demuxers an upload may be opened with (FFmpeg short names). Each reads one self-contained
# stream from the upload's bytes; none follows references to other files or URLs (mov's data
# references are switched off below).
ALLOWED_DEMUXERS = ("wav", "flac", "mp3", "aac", "ogg", "matroska", "mov", "aiff", "caf", "amr")
_MP4_ATOMS = (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide")
# FFmpeg reads a leading ID3v2 tag before any demuxer; an MP3 may carry a few (cover art).
_MAX_ID3_TAGS = 4

# Options for every open. Custom I/O never goes through a protocol, so an empty protocol list
# only affects nested opens, which it refuses: belt and braces with `_refuse_nested_open`.
_OPEN_OPTIONS = {
    "format_whitelist": ",".join(ALLOWED_DEMUXERS),
    "protocol_whitelist": "none",
}
_DEMUXER_OPTIONS = {"mov": {"enable_drefs": "0", "use_absolute_path": "0"}}


class _NestedOpenRefused(Exception):
    """FFmpeg asked to open something other than the upload."""


def _id3v2_end(data: bytes, offset: int) -> int:
    """Offset after an ID3v2 tag at `offset`, or `offset` when there is none."""
    head = data[offset : offset + 10]
    if len(head) < 10 or head[:3] != b"ID3" or any(b & 0x80 for b in head[6:10]):
        return offset
    size = (head[6] << 21) | (head[7] << 14) | (head[8] << 7) | head[9]
    footer = 10 if head[5] & 0x10 else 0
    return offset + 10 + size + footer


def container_of(data: bytes) -> str | None:
    """The allow-listed FFmpeg demuxer for these bytes, from their magic numbers, or None.

    Cheap (looks at a few dozen bytes past any ID3v2 tags): safe to call on the event loop.
    """
    if data[:4] in (b"RIFF", b"RF64", b"BW64") and data[8:12] == b"WAVE":
        return "wav"
    if data[4:8] in _MP4_ATOMS:
        return "mov"
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"  # also WebM
    if data[:4] == b"OggS":
        return "ogg"
    if data[:4] == b"FORM" and data[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if data[:4] == b"caff":
        return "caf"
    if data[:5] == b"#!AMR":  # "#!AMR\n" and "#!AMR-WB\n"
        return "amr"
    offset = 0
    for _ in range(_MAX_ID3_TAGS):
        after = _id3v2_end(data, offset)
        if after == offset:
            break
        offset = after
    head = data[offset : offset + 4]
    if head == b"fLaC":
        return "flac"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        layer = (head[1] >> 1) & 0x3
        if layer == 0:
            return "aac" if head[1] & 0xF6 == 0xF0 else None  # ADTS
        return "mp3"  # MPEG-1/2/2.5 layer I-III frame sync
    return None


def _refuse_nested_open(url: str, flags: int, options: dict) -> None:
    raise _NestedOpenRefused(url[:200])


class _CappedMonoResampler:
    """PyAV's resampler to 16 kHz mono int16, which counts what it produces and stops at the
    cap. A stream may change format mid-way (chained Ogg), so it re-creates the resampler."""

    def __init__(self, max_samples: int, max_seconds: float) -> None:
        self._max_samples = max_samples
        self._max_seconds = max_seconds
        self._resampler: av.AudioResampler | None = None
        self._input_key: tuple[str, str, int] | None = None
        self._input_seconds = 0.0
        self.chunks: list[np.ndarray] = []
        self.samples = 0

    def push(self, frame: av.AudioFrame) -> None:
        rate = frame.sample_rate
        if not MIN_INPUT_RATE <= rate <= MAX_INPUT_RATE:
            raise AudioDecodeError(
                f"Unsupported sample rate {rate} Hz "
                f"(expected {MIN_INPUT_RATE}..{MAX_INPUT_RATE} Hz)."
            )
        if frame.layout.nb_channels < 1:
            raise AudioDecodeError("Audio has no channels.")
        # Checked on the input side too, so that one huge frame is refused before it is
        # resampled, not after.
        self._input_seconds += frame.samples / rate
        if self._input_seconds > self._max_seconds + 1.0:
            raise AudioTooLongError(self._max_seconds)
        key = (frame.format.name, frame.layout.name, rate)
        if self._resampler is None or key != self._input_key:
            self.flush()
            # int16: half the memory of float32 for what a request holds while its pieces
            # wait (19 MB per 10 minutes), and lossless for the 16-bit sources most uploads are
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
            self._input_key = key
        frame.pts = None  # timestamps are irrelevant here and gaps make the resampler fail
        self._collect(self._resampler.resample(frame))

    def flush(self) -> None:
        if self._resampler is not None:
            self._collect(self._resampler.resample(None))
            self._resampler = None

    def _collect(self, frames: list[av.AudioFrame]) -> None:
        for out in frames:
            samples = out.to_ndarray().reshape(-1)  # packed mono s16: shape (1, n)
            self.samples += samples.shape[0]
            if self.samples > self._max_samples:
                raise AudioTooLongError(self._max_seconds)
            self.chunks.append(samples)


REFUSED_FORMAT_MESSAGE = (
    "Unsupported audio format: send WAV, FLAC, MP3, Ogg (Opus/Vorbis/FLAC), WebM/Matroska, "
    "MP4/M4A/MOV, AAC (ADTS), AIFF, CAF or AMR."
)


def check_container(data: bytes) -> str:
    """The demuxer to open `data` with; refuses what is not an allow-listed container.

    Raises:
        AudioDecodeError: `empty_audio` for no bytes, `invalid_audio` for anything that is not
            one of `ALLOWED_DEMUXERS` (playlists, concat lists, SDP, images, text, ...).
    """
    if not data:
        raise AudioDecodeError("The uploaded file is empty.", code="empty_audio")
    demuxer = container_of(data)
    if demuxer is None:
        raise AudioDecodeError(REFUSED_FORMAT_MESSAGE)
    return demuxer


def decode_audio_capped(data: bytes, max_seconds: float) -> np.ndarray:
    """Decode an allow-listed container (`check_container`) to 16 kHz mono int16.

    Blocking and CPU-bound: run it in an executor.

    Args:
        data: The uploaded file's bytes.
        max_seconds: Refuse audio longer than this, stopping as soon as the decoded
            duration passes it.

    Returns:
        The samples (may be empty only if the caller allows it; see Raises).

    Raises:
        AudioTooLongError: The audio is longer than `max_seconds`.
        AudioDecodeError: Not audio, no audio stream, corrupt, or no samples at all.
    """
    demuxer = check_container(data)
    capped = _CappedMonoResampler(int(max_seconds * SAMPLE_RATE), max_seconds)
    try:
        with av.open(
            io.BytesIO(data),
            mode="r",
            format=demuxer,
            options={**_OPEN_OPTIONS, **_DEMUXER_OPTIONS.get(demuxer, {})},
            metadata_errors="ignore",
            io_open=_refuse_nested_open,
        ) as container:
            if not container.streams.audio:
                raise AudioDecodeError("The file has no audio stream.")
            stream = container.streams.audio[0]
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.error.InvalidDataError:
                    continue  # one corrupt packet: skip it, as faster-whisper does
                for frame in frames:
                    capped.push(frame)
            capped.flush()
    except AudioDecodeError:
        raise
    except _NestedOpenRefused as exc:
        logger.warning("refused an upload (%s) that asked to open %r", demuxer, str(exc))
        raise AudioDecodeError(REFUSED_FORMAT_MESSAGE) from None
    except (av.error.FFmpegError, ValueError, OverflowError) as exc:
        logger.info("audio decode failed: %s", exc)
        raise AudioDecodeError("The file could not be decoded as audio.") from None
    if capped.samples == 0:
        raise AudioDecodeError("The file contains no audio samples.", code="empty_audio")
    return np.concatenate(capped.chunks)
