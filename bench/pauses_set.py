"""Build the pauses set: real sentences that pause inside, for endpointing tests and benchmarks.

    python bench/pauses_set.py            # writes tests/data/pauses.wav and pauses.json

Every single-sentence clip of tests/data (transcripts.jsonl) is used ROUNDS times, in a seeded
random order. Each use gets one pause of 300-700 ms of digital silence inside it (two in clips
longer than 6 s), cut at a gap between two words: faster-whisper (the bundled tiny.en) gives
word times, and the cut goes at the quietest 10 ms of the gap, so no word is clipped. Sentences
are joined with 600-1500 ms of digital silence. The same seed gives the same files.

pauses.json has the format of conversation.json: per sentence its `start`/`end` in the set,
`speech_start`/`speech_end` (first/last 20 ms frame within 35 dB of the sentence's loudest
frame: measure final latency from `speech_end`), its reference `text`, and its inner `pauses`
(`at`: where the silence begins, `duration`, `after_word`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from stt_sidecar.model import bundled_model_path

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
RATE = 16000
SEED = 14
ROUNDS = 2
INNER_PAUSE_S = (0.3, 0.7)
BETWEEN_PAUSE_S = (0.6, 1.5)
TWO_PAUSES_ABOVE_S = 6.0
LEAD_S, TAIL_S = 0.5, 1.5
AUDIBLE_RANGE_DB = 35.0
FRAME = RATE // 50  # 20 ms


def word_gaps(model: Any, audio: np.ndarray) -> list[tuple[float, float, str]]:
    """(end of a word, start of the next, the word) for every gap between two words."""
    segments, _ = model.transcribe(
        audio.astype(np.float32) / 32768.0,
        language="en",
        beam_size=1,
        word_timestamps=True,
        vad_filter=False,
        condition_on_previous_text=False,
    )
    words = [w for s in segments for w in (s.words or [])]
    return [(a.end, b.start, a.word.strip()) for a, b in itertools.pairwise(words)]


def quietest_point(audio: np.ndarray, begin: float, end: float) -> int:
    """Sample index of the quietest 10 ms around a word gap (whisper's times are approximate)."""
    step = RATE // 100
    lo = max(step, int((min(begin, end) - 0.06) * RATE))
    hi = min(len(audio) - step, int((max(begin, end) + 0.06) * RATE))
    best, best_energy = (lo + hi) // 2, float("inf")
    for i in range(lo, max(lo + 1, hi - step), step // 2):
        energy = float(np.mean(audio[i : i + step].astype(np.float64) ** 2))
        if energy < best_energy:
            best, best_energy = i + step // 2, energy
    return best


def audible_bounds(audio: np.ndarray) -> tuple[float, float]:
    frames = audio[: audio.size // FRAME * FRAME].astype(np.float64).reshape(-1, FRAME)
    db = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    loud = np.flatnonzero(db >= db.max() - AUDIBLE_RANGE_DB)
    return loud[0] * FRAME / RATE, (loud[-1] + 1) * FRAME / RATE


def build(seed: int, rounds: int) -> tuple[np.ndarray, dict[str, Any]]:
    from faster_whisper import WhisperModel

    model = WhisperModel(str(bundled_model_path()), device="cpu", compute_type="int8")
    rng = random.Random(seed)
    clips = [json.loads(line) for line in (DATA / "transcripts.jsonl").read_text().splitlines()]
    sources: dict[str, tuple[np.ndarray, list[tuple[float, float, str]]]] = {}
    for clip in clips:
        audio, rate = soundfile.read(DATA / clip["audio"], dtype="int16")
        assert rate == RATE and audio.ndim == 1, clip["audio"]
        sources[clip["audio"]] = (audio, word_gaps(model, audio))

    def silence(seconds: float) -> np.ndarray:
        return np.zeros(round(seconds * RATE), dtype=np.int16)

    parts: list[np.ndarray] = [silence(LEAD_S)]
    cursor = len(parts[0])
    sentences: list[dict[str, Any]] = []
    order = [clip for _ in range(rounds) for clip in rng.sample(clips, len(clips))]
    for n, clip in enumerate(order):
        audio, gaps = sources[clip["audio"]]
        count = 2 if len(audio) / RATE > TWO_PAUSES_ABOVE_S else 1
        chosen = sorted(rng.sample(range(len(gaps)), min(count, len(gaps))))
        pieces, pauses, previous = [], [], 0
        for g in chosen:
            begin, end, word = gaps[g]
            cut = quietest_point(audio, begin, end)
            duration = round(rng.uniform(*INNER_PAUSE_S), 3)
            pieces.append(audio[previous:cut])
            at = cursor + sum(len(p) for p in pieces)
            pieces.append(silence(duration))
            pauses.append({"at": round(at / RATE, 3), "duration": duration, "after_word": word})
            previous = cut
        pieces.append(audio[previous:])
        sentence = np.concatenate(pieces)
        speech_start, speech_end = audible_bounds(sentence)
        start = cursor / RATE
        sentences.append(
            {
                "audio": clip["audio"],
                "start": round(start, 3),
                "end": round(start + len(sentence) / RATE, 3),
                "speech_start": round(start + speech_start, 3),
                "speech_end": round(start + speech_end, 3),
                "text": clip["text"],
                "pauses": pauses,
            }
        )
        gap = silence(TAIL_S if n == len(order) - 1 else rng.uniform(*BETWEEN_PAUSE_S))
        parts += [sentence, gap]
        cursor += len(sentence) + len(gap)
    audio = np.concatenate(parts)
    timing = {
        "audio": "pauses.wav",
        "sample_rate": RATE,
        "duration": round(len(audio) / RATE, 3),
        "seed": seed,
        "note": (
            "built by bench/pauses_set.py: each sentence holds 1-2 pauses of 300-700 ms of"
            " digital silence cut at word gaps, sentences are 600-1500 ms apart; start/end: the"
            " sentence in the set; speech_start/speech_end: first/last 20 ms frame within 35 dB"
            " of its loudest frame (measure latency from speech_end)"
        ),
        "utterances": sentences,
    }
    return audio, timing


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--out", type=Path, default=DATA / "pauses.wav")
    args = parser.parse_args()
    audio, timing = build(args.seed, args.rounds)
    soundfile.write(args.out, audio, RATE, subtype="PCM_16")
    args.out.with_suffix(".json").write_text(json.dumps(timing, indent=1) + "\n")
    inner = [p["duration"] for u in timing["utterances"] for p in u["pauses"]]
    print(
        f"{args.out}: {timing['duration']:.1f} s, {len(timing['utterances'])} sentences,"
        f" {len(inner)} inner pauses of {min(inner):.2f}-{max(inner):.2f} s"
    )


if __name__ == "__main__":
    main()
