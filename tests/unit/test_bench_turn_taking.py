"""bench/stream.py's `turns` mode must spread speech over the run, as people taking turns do."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import soundfile

from bench.stream import plans

DATA = Path(__file__).resolve().parents[1] / "data"
STREAMS = 24
SEEDS = range(1, 6)


def load() -> tuple[np.ndarray, int, list[dict]]:
    audio, rate = soundfile.read(DATA / "conversation.wav", dtype="int16", always_2d=True)
    return audio, rate, json.loads((DATA / "conversation.json").read_text())["utterances"]


def test_turns_keep_the_same_share_of_streams_speaking_throughout_the_run() -> None:
    audio, rate, utterances = load()
    runs = [
        plans(argparse.Namespace(seed=seed, talk_share=0.5), audio, rate, utterances, "turns", 24)
        for seed in SEEDS
    ]
    seconds = int(len(runs[0][0].audio) / rate)
    speaking = np.zeros(seconds)
    for plan in (plan for run in runs for plan in run):
        assert len(plan.audio) == len(runs[0][0].audio)  # every client streams the whole run
        for u in plan.utterances:
            speaking[int(u["speech_start"]) : int(u["speech_end"]) + 1] += 1
    share = speaking[: seconds // 10 * 10].reshape(-1, 10).mean(axis=1) / (STREAMS * len(SEEDS))
    # half of each loop is the file, ~80 % of which is speech: ~0.45 (a little less at the
    # start, where the silenced utterance was). Entering only in pauses gave 0.22 at the
    # start of the run and 0.67 in its middle.
    assert share.min() >= 0.25 and share.max() <= 0.55, share


def test_each_kept_utterance_is_where_its_reference_says_and_the_dropped_one_is_silent() -> None:
    audio, rate, utterances = load()
    original = {u["text"]: u for u in utterances}

    def clip(samples: np.ndarray, u: dict) -> np.ndarray:
        return samples[round(u["start"] * rate) : round(u["start"] * rate) + 16000]

    for seed in SEEDS:
        args = argparse.Namespace(seed=seed, talk_share=0.5)
        for plan in plans(args, audio, rate, utterances, "turns", STREAMS):
            kept = {u["text"] for u in plan.utterances}
            for u in plan.utterances:  # its first second, sample for sample
                assert np.array_equal(clip(plan.audio, u), clip(audio, original[u["text"]]))
            # the file's sound, less the utterance the loop was entered in (if any)
            dropped = [u for u in utterances if u["text"] not in kept]
            assert len(dropped) <= 1
            energy = int(np.sum(plan.audio.astype(np.int64) ** 2))
            expected = int(np.sum(audio.astype(np.int64) ** 2))
            for u in dropped:
                span = audio[round(u["start"] * rate) : round(u["end"] * rate)]
                expected -= int(np.sum(span.astype(np.int64) ** 2))
            assert energy == expected
