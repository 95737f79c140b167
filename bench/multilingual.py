"""Multilingual benchmark: per language and model, batch and streaming on recorded speech.

    python bench/multilingual.py --models base,tiny.en --streams 1,4

Speech: tests/data/multilingual (Spanish, French, Italian prompts recorded for the Asterisk PBX,
and 20 s of a French radio broadcast; see its README) and the English clips of tests/data.
English-only models get the English clips only. For each model one sidecar is started; printed
per language:

- batch: WER and RTF (request time / audio time) of `POST /v1/audio/transcriptions` per clip,
  with `language` omitted, and how often the detected language was right
- streaming: the language's first clips joined with 1.5 s pauses, all languages one after the
  other in one stream (the speaker switches language between sentences), `language` null,
  replayed in real time by N concurrent clients: WER, final latency from the audible end of each
  clip (p50/p95), detection accuracy of the finals
- the sidecar's peak RSS, its CPU seconds per second of streamed audio, the streams two cores
  would carry by that figure, and the model's size on disk

`--synthetic` adds German and Spanish sentences spoken by espeak-ng, reported separately: the
synthetic voice is no stand-in for people, only a second opinion.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import subprocess
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import soundfile

from bench.stream import ResourceSampler, add_sidecar_env_option, pct
from stt_sidecar.audio_format import SAMPLE_RATE
from stt_sidecar.replay import assign_finals, load_pcm16, replay
from stt_sidecar.streaming.transcripts import audible_end
from tests.streaming_helpers import resample_int16
from tests.support.sidecar import SidecarProcess
from tests.support.speech import clips, multilingual_clips, wer

PAUSE_S = 1.5
SYNTHETIC = {
    "de": [
        "Guten Morgen, ich möchte einen Tisch für zwei Personen reservieren.",
        "Der Zug nach Berlin fährt heute um acht Uhr ab.",
        "Können Sie mir bitte sagen, wo der Bahnhof ist?",
    ],
    "es": [
        "Buenos días, quisiera reservar una mesa para dos personas.",
        "El tren a Madrid sale hoy a las ocho de la mañana.",
    ],
}


@dataclass(frozen=True)
class Sample:
    name: str
    language: str
    text: str
    audio: np.ndarray  # int16 mono at 16 kHz

    @property
    def seconds(self) -> float:
        return self.audio.size / SAMPLE_RATE


def _load(path: Path) -> np.ndarray:
    audio, rate = load_pcm16(path)
    mono = audio[:, 0]
    return mono if rate == SAMPLE_RATE else resample_int16(mono, rate, SAMPLE_RATE, 1).reshape(-1)


def recorded_samples() -> list[Sample]:
    out = [Sample(c.name, c.language, c.text, _load(c.path)) for c in multilingual_clips()]
    out += [Sample(c.name, "en", c.text, _load(c.path)) for c in clips()]
    return out


def synthetic_samples(work: Path) -> list[Sample]:
    out = []
    for language, sentences in SYNTHETIC.items():
        for i, text in enumerate(sentences):
            path = work / f"espeak_{language}_{i}.wav"
            subprocess.run(
                ["espeak-ng", "-v", language, "-w", str(path), text], check=True, timeout=60
            )
            out.append(Sample(path.name, language, text, _load(path)))
    return out


def wav_bytes(audio: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, audio, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


async def batch(
    http: aiohttp.ClientSession, base: str, samples: list[Sample], *, given: bool = False
) -> list[tuple[Sample, str, str, float]]:
    """(sample, text, detected language, seconds) per sample, one request at a time; `given`
    sends each sample's language instead of leaving it to detection."""
    out = []
    for s in samples:
        form = aiohttp.FormData()
        form.add_field("file", wav_bytes(s.audio), filename="clip.wav", content_type="audio/wav")
        form.add_field("model", "whisper-1")
        form.add_field("response_format", "verbose_json")
        if given:
            form.add_field("language", s.language)
        started = time.monotonic()
        async with http.post(base + "/v1/audio/transcriptions", data=form) as r:
            body = await r.json()
            assert r.status == 200, body
        out.append((s, body["text"], body["language"], time.monotonic() - started))
    return out


def stream_audio(samples: list[Sample]) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The samples joined with pauses, and each one's place (start, end, audible end)."""
    pause = np.zeros(int(PAUSE_S * SAMPLE_RATE), dtype=np.int16)
    parts, places, at = [pause], [], pause.size
    for s in samples:
        start = at / SAMPLE_RATE
        heard = audible_end(s.audio.astype(np.float32) / 32768, start)
        places.append({"start": start, "end": start + s.seconds, "speech_end": heard})
        parts += [s.audio, pause]
        at += s.audio.size + pause.size
    return np.concatenate(parts).reshape(-1, 1), places


def report_batch(title: str, rows: list[tuple[Sample, str, str, float]]) -> None:
    by_language: dict[str, list[tuple[Sample, str, str, float]]] = defaultdict(list)
    for row in rows:
        # the broadcast (two speakers, music) is another kind of speech than the prompts
        kind = " (broadcast)" if "broadcast" in row[0].name else ""
        by_language[row[0].language + kind].append(row)
    print(title)
    print(f"  {'lang':<16} {'clips':>5} {'audio s':>8} {'WER':>6} {'RTF':>6} {'detected':>9}")
    for language, group in sorted(by_language.items()):
        refs = [s.text for s, *_ in group]
        hyps = [text for _, text, _, _ in group]
        audio = sum(s.seconds for s, *_ in group)
        took = sum(t for *_, t in group)
        right = sum(detected == s.language for s, _, detected, _ in group)
        print(
            f"  {language:<16} {len(group):>5} {audio:>8.1f} "
            f"{wer(refs, hyps, language=group[0][0].language):>6.3f} {took / audio:>6.3f} "
            f"{right:>4}/{len(group):<4}"
        )


def model_size_mib(name: str) -> float:
    from stt_sidecar.model import resolve_model

    path = Path(resolve_model(name).path)
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file()) / 2**20


async def bench_model(
    model: str, streams: Sequence[int], per_language: int, synthetic: bool, env: dict[str, str]
) -> None:
    recorded = recorded_samples()
    english_only = model.endswith(".en")
    if english_only:
        recorded = [s for s in recorded if s.language == "en"]
    sidecar = SidecarProcess(STT_MODEL=model, STT_MAX_STREAMS=str(max(streams) * 2), **env).start(
        timeout=300
    )
    sampler = ResourceSampler(sidecar.proc.pid)
    try:
        with sampler:
            async with aiohttp.ClientSession() as http:
                async with http.get(sidecar.url + "/ready") as r:
                    ready = await r.json()
                print(
                    f"\n== model {model} ({ready['device']}/{ready['compute_type']}), "
                    f"{model_size_mib(model):.0f} MiB on disk"
                )
                report_batch("batch (language omitted):", await batch(http, sidecar.url, recorded))
                if not english_only:
                    rows = await batch(http, sidecar.url, recorded, given=True)
                    report_batch("batch, language given (what detection costs):", rows)
                if synthetic and not english_only:
                    with tempfile.TemporaryDirectory() as work:
                        rows = await batch(http, sidecar.url, synthetic_samples(Path(work)))
                    report_batch("batch, espeak-ng synthetic speech (not people):", rows)

                chosen: list[Sample] = []
                for language in ("es", "fr", "it", "en"):
                    same = [s for s in recorded if s.language == language]
                    chosen += [s for s in same if "broadcast" not in s.name][:per_language]
                audio, places = stream_audio(chosen)
                duration = audio.size / SAMPLE_RATE
                languages = ", ".join(sorted({s.language for s in chosen}))
                print(
                    f"streaming: {len(chosen)} utterances ({languages}), {duration:.0f} s, "
                    "language null, real time"
                )
                print(
                    f"  {'streams':>7} {'lang':<5} {'WER':>6} {'final p50':>9} {'p95':>6} "
                    f"{'detected':>9} {'lost':>4}"
                )
                for n in (n for n in streams if n > 0):
                    cpu_before = sampler.cpu_seconds()
                    results = await asyncio.gather(
                        *(
                            replay(
                                sidecar.ws_url,
                                audio,
                                SAMPLE_RATE,
                                speed=1.0,
                                config={"language": None, "interim_results": True},
                                session=http,
                                timeout=300,
                            )
                            for _ in range(n)
                        )
                    )
                    cpu = sampler.cpu_seconds() - cpu_before
                    per_language_rows: dict[str, dict[str, list[Any]]] = defaultdict(
                        lambda: defaultdict(list)
                    )
                    for result in results:
                        received = {id(m.message): m.at for m in result.messages}
                        groups = assign_finals(result.finals, places)
                        for sample, place, finals in zip(chosen, places, groups, strict=False):
                            row = per_language_rows[sample.language]
                            row["refs"].append(sample.text)
                            row["hyps"].append(" ".join(f["text"] for f in finals))
                            if not finals:
                                row["lost"].append(sample.name)
                                continue
                            arrived = max(received[id(f)] for f in finals)
                            row["latency"].append(arrived - place["speech_end"])
                            row["right"] += [f["language"] == sample.language for f in finals]
                    outside = [
                        f["text"] for r in results for f in assign_finals(r.finals, places)[-1]
                    ]
                    if outside or any(row["lost"] for row in per_language_rows.values()):
                        lost = sorted(
                            {n for row in per_language_rows.values() for n in row["lost"]}
                        )
                        print(f"  lost: {lost}; finals outside every clip: {outside}")
                    for language, row in sorted(per_language_rows.items()):
                        print(
                            f"  {n:>7} {language:<5} "
                            f"{wer(row['refs'], row['hyps'], language=language):>6.3f} "
                            f"{pct(row['latency'], 50):>8.2f}s {pct(row['latency'], 95):>5.2f}s "
                            f"{sum(row['right']):>4}/{len(row['right']):<4} {len(row['lost']):>4}"
                        )
                    cpu_per_stream = cpu / (duration * n)
                    print(
                        f"  {n:>7} streams: sidecar CPU {cpu_per_stream:.3f} s per audio s "
                        f"per stream -> about {2 / cpu_per_stream:.1f} streams per 2 cores"
                    )
        print(f"peak RSS {sampler.peak_rss:.0f} MiB")
    finally:
        sidecar.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="base,tiny.en")
    parser.add_argument("--streams", default="1,4")
    parser.add_argument(
        "--per-language", type=int, default=4, help="clips per language in the stream"
    )
    parser.add_argument("--synthetic", action="store_true", help="also espeak-ng speech")
    add_sidecar_env_option(parser)
    args = parser.parse_args(argv)
    subprocess.run(["uptime"], check=False)
    for model in args.models.split(","):
        asyncio.run(
            bench_model(
                model,
                [int(n) for n in args.streams.split(",")],
                args.per_language,
                args.synthetic,
                dict(args.sidecar_env),
            )
        )
    subprocess.run(["uptime"], check=False)


if __name__ == "__main__":
    main()
