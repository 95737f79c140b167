"""bench/stream.py's `turns` mode must spread speech over the run, as people taking turns do."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import soundfile

from bench.stream import plans

DATA = Path(__file__).resolve().parents[1] / "data"


def test_turns_keep_about_half_the_streams_speaking_at_every_moment() -> None:
    audio, rate = soundfile.read(DATA / "conversation.wav", dtype="int16", always_2d=True)
    utterances = json.loads((DATA / "conversation.json").read_text())["utterances"]
    streams = 24
    args = argparse.Namespace(seed=1, talk_share=0.5)
    run = plans(args, audio, rate, utterances, "turns", streams)

    seconds = int(len(run[0].audio) / rate)
    speaking = np.zeros(seconds)
    for plan in run:
        assert len(plan.audio) == len(run[0].audio)  # every client streams the whole run
        for u in plan.utterances:
            speaking[int(u["speech_start"]) : int(u["speech_end"]) + 1] += 1
            # the utterance is where its reference says, whole: its clip is in the audio
            clip = plan.audio[round(u["start"] * rate) : round(u["end"] * rate)]
            assert np.abs(clip).max() > 1000
    per_10s = speaking[: seconds // 10 * 10].reshape(-1, 10).mean(axis=1)
    # the file is half of each loop and ~80 % of it is speech: ~10 of 24 at once, never all
    assert per_10s.min() >= streams * 0.2
    assert per_10s.max() <= streams * 0.6
