"""Endpointing and context benchmark: one real-time stream per mode, modes side by side.

    python bench/endpointing.py                       # pauses set + conversation, every mode
    python bench/endpointing.py --sets pauses --modes fixed,adaptive

Sets (tests/data): `pauses` (bench/pauses_set.py: sentences with 300-700 ms pauses inside,
600-1500 ms between) and `conversation` (conversation.wav), or the path of a set built by
bench/pauses_set.py with another seed. Modes, each one stream replayed in
real time against the same sidecar, one after the other (`--paired`: all at once, so that on a
shared machine each mode sees the same load):

- `fixed`: STT_ENDPOINT_SILENCE_MS (450 ms) and each utterance decoded alone: the behaviour
  before adaptive endpointing;
- `adaptive` (the default): adaptive endpointing, each utterance decoded alone;
- `adaptive+context`: adaptive endpointing, finals prompted with earlier finals;
- `fixed+context`: the fixed endpoint with context (isolates what context does).

Printed per set and mode, after the two batch baselines of the same run (each reference
sentence decoded alone, and the whole file in one long-form request):

- final latency after each true sentence end (p50 / p95): when the final covering the end of
  the sentence (its `speech_end`) arrived, minus that end;
- sentences split into more than one final, sentences merged with another into one final,
  sentences with no final, finals outside every sentence (words invented in silence);
- WER of the whole transcript (finals joined) against the references;
- the endpoint decisions counted in /metrics (short / default / long).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path
from typing import Any

import aiohttp

from bench.stream import add_sidecar_env_option, batch_text, pct, wav_bytes
from stt_sidecar.replay import ReplayResult, assign_finals, load_pcm16, replay, split_and_merged
from tests.support.sidecar import SidecarProcess
from tests.support.speech import wer

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
SETS = {"pauses": DATA / "pauses.wav", "conversation": DATA / "conversation.wav"}
MODES: dict[str, dict[str, Any]] = {
    "fixed": {"endpointing": "fixed", "condition_on_previous_text": False},
    "adaptive": {"endpointing": "adaptive", "condition_on_previous_text": False},
    "adaptive+context": {"endpointing": "adaptive", "condition_on_previous_text": True},
    "fixed+context": {"endpointing": "fixed", "condition_on_previous_text": True},
}
MERGE_MARGIN_S = 0.3  # a final reaching this far into two sentences merged them


def score(result: ReplayResult, sentences: list[dict[str, Any]]) -> dict[str, Any]:
    finals = result.finals
    arrived = {id(m.message): m.at for m in result.messages}
    groups = assign_finals(finals, sentences)
    latencies = []
    for s in sentences:
        covering = [
            f
            for f in finals
            if f["start"] <= s["speech_end"] and f["end"] >= s["speech_end"] - MERGE_MARGIN_S
        ]
        if covering:
            latencies.append(min(arrived[id(f)] for f in covering) - s["speech_end"])
    split, merged = split_and_merged(finals, sentences, MERGE_MARGIN_S)
    return {
        "latencies": latencies,
        "split": len(split),
        "merged": len(merged),
        "missing": sum(not g for g in groups[:-1]),
        "outside": len(groups[-1]),
        "wer": wer(" ".join(s["text"] for s in sentences), " ".join(f["text"] for f in finals)),
    }


async def endpoint_counts(http: aiohttp.ClientSession, base: str) -> dict[str, float]:
    counts = {"short": 0.0, "default": 0.0, "long": 0.0}
    async with http.get(base + "/metrics") as r:
        for line in (await r.text()).splitlines():
            if line.startswith("stt_endpoints_total{"):
                decision = line.split('decision="', 1)[1].split('"', 1)[0]
                counts[decision] = float(line.split()[-1])
    return counts


async def run(args: argparse.Namespace) -> None:
    sidecar = SidecarProcess(**dict(args.sidecar_env)).start()
    try:
        async with aiohttp.ClientSession() as http:
            base, ws_url = sidecar.url, sidecar.ws_url
            print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
            for name in args.sets:
                path = SETS.get(name) or Path(name)
                audio, rate = load_pcm16(path)
                sentences = json.loads(path.with_suffix(".json").read_text())["utterances"]
                refs = " ".join(s["text"] for s in sentences)
                per_sentence = [
                    await batch_text(
                        http,
                        base,
                        wav_bytes(audio[int(s["start"] * rate) : int(s["end"] * rate)], rate),
                    )
                    for s in sentences
                ]
                whole = await batch_text(http, base, wav_bytes(audio, rate))
                print(
                    f"\n{name}: {len(audio) / rate:.1f} s, {len(sentences)} sentences; batch WER:"
                    f" each sentence alone {wer(refs, ' '.join(per_sentence)):.3f},"
                    f" whole file {wer(refs, whole):.3f}"
                )
                print(
                    f"{'mode':>17} {'p50':>6} {'p95':>6} {'split':>6} {'merged':>6} {'missing':>7}"
                    f" {'outside':>7} {'WER':>6} {'short/default/long':>18}  load"
                )
                runs: list[tuple[str, ReplayResult, str, str]] = []
                if args.paired:  # every mode at once: the same load for each
                    results = await asyncio.gather(
                        *(
                            replay(ws_url, audio, rate, speed=1.0, config=MODES[m], session=http)
                            for m in args.modes
                        )
                    )
                    load = f"{os.getloadavg()[0]:.2f}"
                    runs = [(m, r, "n/a", load) for m, r in zip(args.modes, results, strict=True)]
                for mode in args.modes if not args.paired else []:
                    before = await endpoint_counts(http, base)
                    result = await replay(
                        ws_url, audio, rate, speed=1.0, config=MODES[mode], session=http
                    )
                    after = await endpoint_counts(http, base)
                    decisions = "/".join(f"{after[k] - before[k]:.0f}" for k in after)
                    runs.append((mode, result, decisions, f"{os.getloadavg()[0]:.2f}"))
                for mode, result, decisions, load in runs:
                    s = score(result, sentences)
                    p50, p95 = pct(s["latencies"], 50), pct(s["latencies"], 95)
                    print(
                        f"{mode:>17} {p50:>5.2f}s {p95:>5.2f}s"
                        f" {s['split']:>6} {s['merged']:>6} {s['missing']:>7} {s['outside']:>7}"
                        f" {s['wer']:>6.3f} {decisions:>18}  {load}"
                    )
    finally:
        sidecar.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--sets",
        default="pauses,conversation",
        type=lambda s: s.split(","),
        help="pauses, conversation, or a set's .wav with its .json beside it (a held-out"
        " pauses set: bench/pauses_set.py --seed 2026 --rounds 6 --out /tmp/heldout.wav)",
    )
    parser.add_argument(
        "--modes",
        default="fixed,adaptive,adaptive+context,fixed+context",
        type=lambda s: s.split(","),
        help=", ".join(MODES),
    )
    parser.add_argument(
        "--paired",
        action="store_true",
        help="replay every mode at once (one stream each), so each sees the same machine load",
    )
    add_sidecar_env_option(parser)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
