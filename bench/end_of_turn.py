"""End of turn: the sidecar's text rule beside an audio end-of-turn model, decision by decision.

    make bench-end-of-turn       # installs the model's weights (see below), then runs this
    python bench/end_of_turn.py  # --sets pauses,conversation

Issue #14 asks to compare the adaptive endpoint's text rule with an end-of-turn model whose
weights ship in a PyPI package. LiveKit's `livekit-plugins-turn-detector` fetches its weights
from a hub at first use, so it cannot run here. Pipecat's Smart Turn v3.2 (BSD-2-Clause, an
8.7 MB ONNX audio model on a Whisper-tiny encoder) ships inside the `pipecat-ai` wheel.
Only that file is read, with onnxruntime (already a faster-whisper dependency) and
faster-whisper's own log-mel features, which match pipecat's to 4e-6. So
`pip install --no-deps pipecat-ai==1.14.0` is enough, and none of its dependencies are needed.

The decision points are where the sidecar decides:
- every true sentence end of the set (`speech_end`; these should end soon);
- every pause inside a sentence of the pauses set (`pauses`; these should wait, or the
  sentence is split).

At each point, every rule sees the audio from the sentence's start (with the session's
0.4 s pre-roll) to the point plus a little silence:
- `text`: what the sidecar does. It runs the final's speculative decode at 150 ms of
  silence (tiny.en, the streaming window and options), then applies
  `streaming.endpointing.speculative_endpoint`, as the session does: short (220 ms), default
  (450 ms) or long (1100 ms).
- `smart-turn`: the model at 200 ms of silence, as pipecat runs it after its VAD's 0.2 s
  stop. A probability of 0.5 or more is short, anything less is long.
- `both`: where the two agree (text short and model finished, or text long and model
  unfinished), that decision; otherwise the default silence.
- `in-doubt`: the text rule, but where it would wait the default silence (a stop Whisper is
  unsure of, 0.4-0.5), the model decides short or long: it only breaks the text rule's ties.

`--model base` judges the text rule by another Whisper (a packaged or local one, decoding in
English): does a larger model tell fragments from finished sentences better than tiny.en?

Printed per rule:
- the silence it would wait after each true end, as p50 and p95 (the final comes about
  this long after the speech, since the decode hides in the wait);
- how many true ends it would wait long on;
- how many inner pauses it would end on: its silence is shorter than the pause, so the
  sentence is split;
- the CPU it adds per decision (the text rule's decode is the final's own, needed anyway).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from bench.stream import pct
from stt_sidecar.config import SidecarSettings
from stt_sidecar.model import BUNDLED_MODEL_NAME, resolve_model
from stt_sidecar.scheduler import install_encoder_window, run_whisper
from stt_sidecar.streaming.encoder_windows import encoder_window_s
from stt_sidecar.streaming.endpointing import SPECULATE_MS, Endpoint, speculative_endpoint
from stt_sidecar.streaming.protocol import StreamConfig
from stt_sidecar.streaming.session import PRE_ROLL_S
from stt_sidecar.streaming.transcripts import attach_sentence_stops, final_options, shape_final

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
RATE = 16000
SMART_TURN_FILE = "audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx"
SMART_TURN_SECONDS = 8  # the model hears the last 8 s, zero-padded in front
SMART_TURN_SILENCE_S = 0.2  # pipecat runs it once its VAD has heard 0.2 s of silence
RULES = ("text", "smart-turn", "both", "in-doubt")


def smart_turn_model_path() -> Path:
    spec = importlib.util.find_spec("pipecat")  # finds the package without importing it
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / SMART_TURN_FILE
        if path.is_file():
            return path
    raise SystemExit(
        "Smart Turn's weights are not installed: `.venv/bin/pip install --no-deps"
        " pipecat-ai==1.14.0` (or `make bench-end-of-turn`); only its ONNX file is read."
    )


class SmartTurn:
    def __init__(self, path: Path) -> None:
        import onnxruntime
        from faster_whisper.feature_extractor import FeatureExtractor

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(str(path), sess_options=options)
        self._features = FeatureExtractor(feature_size=80, chunk_length=SMART_TURN_SECONDS)

    def probability(self, audio: np.ndarray) -> float:
        """P(the turn is complete) for float32 16 kHz audio ending at the decision point."""
        n = SMART_TURN_SECONDS * RATE
        audio = audio[-n:]
        audio = np.pad(audio, (n - audio.size, 0))
        # Whisper's feature extractor with do_normalize, as the model was trained
        audio = (audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)
        features = self._features(audio, padding=0)[None, :, : SMART_TURN_SECONDS * 100]
        (output,) = self._session.run(None, {"input_features": features.astype(np.float32)})
        return float(np.asarray(output).reshape(-1)[0])


def decision_points(name: str) -> tuple[np.ndarray, list[dict[str, Any]]]:
    path = Path(name) if name.endswith(".wav") else DATA / f"{name}.wav"
    audio, rate = soundfile.read(path, dtype="float32")
    assert rate == RATE and audio.ndim == 1
    points = []
    for sentence in json.loads(path.with_suffix(".json").read_text())["utterances"]:
        start = max(0.0, sentence["speech_start"] - PRE_ROLL_S)
        heard_from = {"start": start, "speech_start": sentence["speech_start"]}
        for pause in sentence.get("pauses", []):
            points.append(
                {**heard_from, "at": pause["at"], "pause": pause["duration"], "end": False}
            )
        points.append({**heard_from, "at": sentence["speech_end"], "pause": 0, "end": True})
    return audio, points


def combined(text: Endpoint, finished: bool) -> Endpoint:
    """Where the text rule and the model agree, their decision; otherwise the default."""
    if text is (Endpoint.SHORT if finished else Endpoint.LONG):
        return text
    return Endpoint.DEFAULT


def in_doubt(text: Endpoint, finished: bool) -> Endpoint:
    """The text rule, with the model deciding where the text rule waits the default."""
    if text is Endpoint.DEFAULT:
        return Endpoint.SHORT if finished else Endpoint.LONG
    return text


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--sets", default="pauses,conversation")
    parser.add_argument(
        "--model", default=BUNDLED_MODEL_NAME, help="the text rule's Whisper, by STT_MODEL's names"
    )
    args = parser.parse_args()
    smart_turn = SmartTurn(smart_turn_model_path())
    from faster_whisper import WhisperModel

    install_encoder_window()
    model = WhisperModel(
        resolve_model(args.model).path, device="cpu", compute_type="int8", cpu_threads=1
    )
    english_only = not model.model.is_multilingual
    options = final_options(StreamConfig())  # English, as the sets are
    s = SidecarSettings()
    silence_ms = {
        Endpoint.SHORT: s.endpoint_short_ms,
        Endpoint.DEFAULT: s.endpoint_silence_ms,
        Endpoint.LONG: s.endpoint_long_ms,
    }
    for name in args.sets.split(","):
        audio, points = decision_points(name)
        waits: dict[str, list[float]] = {rule: [] for rule in RULES}
        long_ends = dict.fromkeys(RULES, 0)
        splits = dict.fromkeys(RULES, 0)
        cpu = {"text": 0.0, "smart-turn": 0.0, "in-doubt": 0.0}
        for p in points:
            begin = int(p["start"] * RATE)
            spoken = audio[begin : int((p["at"] + SPECULATE_MS / 1000) * RATE)]
            t = time.process_time()
            window = encoder_window_s(spoken.size / RATE, final=True, english_only=english_only)
            segments, _ = run_whisper(model, spoken, options, window)
            cpu["text"] += time.process_time() - t
            # what the session classifies: the final as it would send it
            segments, stop = attach_sentence_stops(segments)
            final = shape_final(segments, "en", 0.0, 0.0, 0.0, stop)
            speech_s = p["at"] - p["speech_start"]
            by_text = speculative_endpoint(final, speech_s=speech_s)
            t = time.process_time()
            heard = audio[begin : int((p["at"] + SMART_TURN_SILENCE_S) * RATE)]
            finished = smart_turn.probability(heard) >= 0.5
            model_cpu = time.process_time() - t
            cpu["smart-turn"] += model_cpu
            if by_text is Endpoint.DEFAULT:  # the only points where in-doubt runs the model
                cpu["in-doubt"] += model_cpu
            decisions = {
                "text": by_text,
                "smart-turn": Endpoint.SHORT if finished else Endpoint.LONG,
                "both": combined(by_text, finished),
                "in-doubt": in_doubt(by_text, finished),
            }
            for rule, endpoint in decisions.items():
                wait = silence_ms[endpoint]
                if p["end"]:
                    waits[rule].append(wait)
                    long_ends[rule] += endpoint is Endpoint.LONG
                elif wait < p["pause"] * 1000:
                    splits[rule] += 1
        ends = sum(p["end"] for p in points)
        inner = len(points) - ends
        print(f"\n{name}: {ends} sentence ends, {inner} pauses inside sentences")
        print(
            f"{'rule':>11} {'wait p50':>9} {'wait p95':>9} {'long ends':>10} {'split':>6}"
            "  CPU/decision"
        )
        for rule in RULES:
            extra = {"text": 0.0, "in-doubt": cpu["in-doubt"]}.get(rule, cpu["smart-turn"])
            per_decision_ms = extra / len(points) * 1000
            print(
                f"{rule:>11} {pct(waits[rule], 50):>7.0f}ms {pct(waits[rule], 95):>7.0f}ms"
                f" {long_ends[rule]:>10} {splits[rule]:>3}/{inner:<2}  +{per_decision_ms:.0f} ms"
            )
        print(
            f"(the text rule's decode, the final's own: {cpu['text'] / len(points) * 1000:.0f} ms)"
        )


if __name__ == "__main__":
    main()
